"""The meta-training loop, readable top to bottom.

The trainer alone calls ``zero_grad``, ``backward``, gradient clipping, ``step`` and writes
checkpoints and metrics. Algorithms only return a differentiable loss.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metarun.algorithms.base import Algorithm
from metarun.data.episodes import FixedEpisodes
from metarun.engine import schedules
from metarun.engine.checkpoint import rng_state, save_checkpoint, set_rng_state
from metarun.engine.distributed import Dist
from metarun.engine.evaluate import evaluate
from metarun.engine.metrics import MetricsLog
from metarun.engine.precision import Precision
from metarun.engine.progress import TrainProgress
from metarun.engine.signals import StopRequest
from metarun.errors import NonFiniteLossError, Preempted, Pruned
from metarun.types import (
    STOPPED_ITERATIONS,
    STOPPED_MAX_TIME,
    EvalResult,
    TrainResult,
    TrainSampler,
)

log = logging.getLogger("metarun")


@dataclass(frozen=True)
class TrainSettings:
    """How long and how to meta-train (``train.*`` and ``seed``; checked by
    :mod:`metarun.validate` before anything is built).

    Attributes:
        iterations: number of meta-updates.
        meta_batch: tasks per meta-update.
        eval_every: validate (and checkpoint) every this many steps, and at the last step.
        log_every: write a training point to the metrics every this many steps.
        seed: seeds the episode generator.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        checkpoint_every: also write ``last.pt`` every this many steps (``None``: only at
            validations). The checkpoint it replaces is kept as ``last.prev.pt``.
        max_time: a time budget in seconds (``None``: none). Training stops at the first
            step that ends past it, as at the last step: it validates and checkpoints. The
            budget counts the run's time in :meth:`Trainer.fit` over all its resumes.
        precision: ``"32"``, ``"bf16"`` or ``"16-mixed"`` (:mod:`metarun.engine.precision`).
    """

    iterations: int
    meta_batch: int
    eval_every: int
    log_every: int
    seed: int
    grad_clip: float | None = None
    checkpoint_every: int | None = None
    max_time: float | None = None
    precision: str = "32"


class Trainer:
    """Meta-trains ``algorithm`` on what ``sampler`` draws.

    Args:
        algorithm: the learner; its parameters are what ``optimizer`` updates.
        optimizer: built over ``algorithm.parameters()``.
        sampler: what the algorithm trains on, from the train split (already on the device):
            episodes, or whatever :meth:`Algorithm.training_data` declared.
        val_episodes: fixed validation episodes.
        settings: how long and how (:class:`TrainSettings`).
        checkpoint_dir: where ``best.pt`` and ``last.pt`` go.
        metrics: the run's ``metrics.jsonl`` (``None``: written by another rank).
        scheduler: the learning-rate schedule, stepped once per meta-update
            (:mod:`metarun.engine.schedules`; ``None``: constant).
        checkpoint_extra: plain values stored in every checkpoint (the resolved config).
        resume: a checkpoint written by this trainer: training continues after its step with
            its model, optimizer, schedule, best result and random states, so the result is
            the uninterrupted run's. Without random states (an older checkpoint) it continues
            with fresh ones, and says so. A checkpoint of the last step leaves nothing to
            train: :meth:`fit` returns its best result at once.
        prune: called after each validation with its step and score; ``True`` stops the
            run there, unless it was the last (:class:`~metarun.errors.Pruned`): an Optuna
            search's trial (``metarun.search.trial``). Rank 0's alone; the other ranks stop
            with it.
        dist: this process's place in a data-parallel run
            (:mod:`metarun.engine.distributed`): each rank trains on its share of every
            meta-batch, the gradients are averaged, rank 0 alone validates (the others receive
            its result) and writes; all ranks stop at the same step.

    The metric that picks the best checkpoint is the algorithm's task type's (accuracy is
    maximised, MSE minimised); a non-finite validation score never becomes the best.
    """

    def __init__(self, algorithm: Algorithm, optimizer: torch.optim.Optimizer,
                 sampler: TrainSampler, val_episodes: FixedEpisodes, settings: TrainSettings,
                 checkpoint_dir: Path, metrics: MetricsLog | None,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                 checkpoint_extra: dict[str, Any] | None = None,
                 resume: dict[str, Any] | None = None, dist: Dist | None = None,
                 prune: Callable[[int, float], bool] | None = None) -> None:
        self.algorithm, self.optimizer, self.sampler = algorithm, optimizer, sampler
        self.dist = dist or Dist()
        self.prune = prune
        self.val_episodes, self.settings = val_episodes, settings
        self.iterations = settings.iterations
        self.checkpoint_dir, self.metrics = checkpoint_dir, metrics
        self.extra = checkpoint_extra or {}
        self.generator = torch.Generator().manual_seed(settings.seed)
        device = next(algorithm.parameters()).device
        self.precision = Precision(settings.precision, device, algorithm.second_order)
        self.scheduler = scheduler
        self.start_step = 1
        self.elapsed = 0.0  # training seconds of the processes before this one (resumes)
        self._t0 = time.perf_counter()  # when this process's training started (fit resets it)
        self.stopped = STOPPED_ITERATIONS
        self.best: tuple[int, EvalResult] | None = None
        if resume is not None:
            self._restore(resume)

    def _restore(self, blob: dict[str, Any]) -> None:
        step = int(blob["step"])
        if step > self.iterations:
            raise ValueError(f"the checkpoint is at step {step}, past train.iterations = "
                             f"{self.iterations}; resume with train.iterations >= {step}")
        self.algorithm.load_state_dict(blob["algorithm"])
        self.optimizer.load_state_dict(blob["optimizer"])
        if self.scheduler is not None and blob.get("scheduler") is not None:
            before = schedules.restore(self.scheduler, blob["scheduler"])
            if before is not None:
                log.warning("the learning-rate schedule was laid over %d steps, and "
                            "train.iterations is now %d: from step %d the rate is a %d-step "
                            "run's (%.3g)", before, self.iterations, step + 1,
                            self.iterations, self.optimizer.param_groups[0]["lr"])
        self.precision.load_state_dict(blob.get("scaler"))
        if blob.get("best"):
            b = dict(blob["best"])
            metric = self.algorithm.task_type.metric
            self.best = (int(b["step"]), EvalResult(b[metric], b["ci95"], b["loss"],
                                                    b["episodes"], metric))
        if "rng" in blob:
            set_rng_state(self.generator, self._rank_state(blob))
        else:
            log.warning("the checkpoint holds no random states: episodes after step %d will "
                        "differ from an uninterrupted run's", step)
        self.start_step = step + 1
        self.elapsed = float(blob.get("elapsed", 0.0))
        self.stopped = str(blob.get("stopped", STOPPED_ITERATIONS))
        if step == self.iterations:  # stopped after the final validation: only the test is left
            log.info("training finished at step %d; meta-testing the best checkpoint", step)
        else:
            log.info("resuming after step %d", step)

    def _rank_state(self, blob: dict[str, Any]) -> dict[str, Any]:
        """This rank's random states in a checkpoint. A run of another number of processes
        continues exactly when its ranks' states were all the same (every rank draws the
        same episodes; torch's own generator differs only if a step drew from it)."""
        states = blob.get("rng_ranks") or [blob["rng"]]
        if len(states) == self.dist.world:
            return dict(states[self.dist.rank])
        first = states[0]
        if all(torch.equal(s["episodes"], first["episodes"]) and
               torch.equal(s["torch"], first["torch"]) for s in states[1:]):
            return dict(first)
        raise ValueError(f"the checkpoint was written by {len(states)} processes whose random "
                         f"states differ; resume it with dist.nproc={len(states)}")

    def fit(self) -> TrainResult:
        """Train from :attr:`start_step` to ``iterations``, or until ``max_time`` is spent.

        Raises:
            NonFiniteLossError: a NaN or infinite loss or gradient; ``last.pt`` then holds the
                weights before that step.
            Preempted: SIGTERM or SIGINT; ``last.pt`` holds the last finished step.
        """
        self._t0 = t0 = time.perf_counter()
        every = self.settings
        window: list[tuple[float, float]] = []
        task_type = self.algorithm.task_type
        done = self.start_step - 1
        self.algorithm.train()
        with StopRequest() as stop, TrainProgress(
                self.iterations, start=done, log_every=every.log_every, task_type=task_type,
                live=None if self.dist.is_main else False, on_speed=self._check_budget,
                time_left=None if every.max_time is None else every.max_time - self.elapsed,
        ) as progress:
            for step in range(self.start_step, self.iterations + 1):
                lr = self.optimizer.param_groups[0]["lr"]
                window.append(self._update(step))
                done = step
                loss, score = (sum(v) / len(window) for v in zip(*window, strict=True))
                progress.update(step, loss, score)
                over = every.max_time is not None and self.seconds() >= every.max_time
                over_any, signal_any = self.dist.any(int(over), stop.signal or 0)
                over, stop_signal = bool(over_any), signal_any or None
                last = step == self.iterations or over
                if last:
                    self.stopped = STOPPED_ITERATIONS if step == self.iterations \
                        else STOPPED_MAX_TIME
                if step % every.log_every == 0 or last:
                    if self.metrics is not None:
                        self.metrics.write(step, "train", loss, time.perf_counter() - t0,
                                           **{task_type.metric: score}, lr=lr)
                    window.clear()
                saved = step % every.eval_every == 0 or last
                if saved:
                    val = self._validate(step, time.perf_counter() - t0, progress)
                    if self._pruned(step, val.score) and not last:
                        raise Pruned.after(step, f"val {task_type.metric} {val.score:.6g}")
                elif every.checkpoint_every and step % every.checkpoint_every == 0:
                    self._save("last.pt", step)
                    saved = True
                if stop_signal is not None:
                    path = self.checkpoint_dir / "last.pt"
                    if not saved:
                        path = self._save("last.pt", step)
                    raise Preempted(step, path, stop_signal, stop.handover)
                if last:
                    break
        if self.stopped == STOPPED_MAX_TIME:
            log.info("train.max_time (%.0f s) spent after step %d of %d", every.max_time,
                     done, self.iterations)
        if self.best is None:
            raise NonFiniteLossError(f"every validation {task_type.metric} was non-finite; no "
                                     "best checkpoint was written")
        return TrainResult(self.best[0], self.best[1], done, time.perf_counter() - t0,
                           self.stopped, round(self.seconds(), 3))

    def _pruned(self, step: int, score: float) -> bool:
        """Whether the search's pruner stops the run after this validation: rank 0 asks (its
        ``prune``), and every rank gets the answer, so all stop at this step."""
        return bool(self.dist.from_main(
            lambda: self.prune is not None and self.prune(step, score)))

    def _check_budget(self, step: int, speed: float) -> None:
        """Warn, once the speed is known (``on_speed``), when the budget ends the schedule early."""
        left = None if self.settings.max_time is None else self.settings.max_time - self.seconds()
        note = schedules.budget_shortfall(self.scheduler, step, self.iterations, speed, left)
        if note and self.dist.is_main:
            log.warning(note)

    def seconds(self) -> float:
        """The run's training seconds so far, its earlier processes' included."""
        return self.elapsed + time.perf_counter() - self._t0

    def _update(self, step: int) -> tuple[float, float]:
        """One meta-update; its training loss and metric.

        Raises:
            NonFiniteLossError: the loss or gradient norm is not finite; the update is not
                made and ``last.pt`` holds the weights after ``step - 1``.
        """
        self.algorithm.scheduled(step)
        batch = self.dist.shard(self.sampler.sample(self.settings.meta_batch, self.generator))
        # Buffers (batch-norm statistics) change in the forward pass: keep the last good
        # ones, so a non-finite step leaves nothing of itself behind.
        buffers = [(b, b.clone()) for b in self.algorithm.buffers()]
        with self.precision.autocast():
            out = self.algorithm.meta_train_step(batch)
        metric = self.algorithm.task_type.metric
        # the meta-batch's loss and metric: the mean of the ranks' (equal) shares
        loss, score = self.dist.mean(out.loss.detach().item(), out.metrics.get(metric, math.nan))
        self.optimizer.zero_grad(set_to_none=True)
        norm = math.nan
        if math.isfinite(loss):
            self.precision.backward(out.loss)
            self.dist.average_gradients(list(self.algorithm.parameters()))
            self.precision.unscale(self.optimizer)
            clip = self.settings.grad_clip
            norm = float(torch.nn.utils.clip_grad_norm_(
                self.algorithm.parameters(), clip if clip is not None else math.inf))
        overflow = self.precision.skips_overflow and math.isfinite(loss)  # the scaler's
        if not math.isfinite(loss) or (not math.isfinite(norm) and not overflow):
            what, value = ("meta-loss", loss) if not math.isfinite(loss) \
                else ("gradient norm", norm)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for b, good in buffers:
                    b.copy_(good)
            saved = self._save("last.pt", step - 1)
            raise NonFiniteLossError(f"the {what} is {value} at step {step}; stopped before "
                                     f"the update. {saved} holds the weights after step "
                                     f"{step - 1}")
        self.precision.step(self.optimizer)
        self.dist.average_buffers(self.algorithm)
        if self.scheduler is not None:
            self.scheduler.step()
        return loss, score

    def _validate(self, step: int, seconds: float, progress: TrainProgress) -> EvalResult:
        """Score the validation episodes; checkpoint ``last.pt`` and, if better, ``best.pt``."""
        task_type = self.algorithm.task_type
        report = progress.evaluation("validation", len(self.val_episodes))
        val = self.dist.from_main(lambda: evaluate(self.algorithm, self.val_episodes,
                                                   progress=report))
        self.algorithm.train()
        if self.metrics is not None:
            self.metrics.write(step, "val", val.loss, seconds, **{task_type.metric: val.score},
                               ci95=val.ci95)
        improved = math.isfinite(val.score) and (
            self.best is None or task_type.better(val.score, self.best[1].score))
        log.info("step %d: val %s %s over %d episodes%s", step, task_type.metric,
                 task_type.format(val.score, val.ci95), val.episodes,
                 " (best so far)" if improved else "")
        if improved:
            self.best = (step, val)
            self._save("best.pt", step, val)
        self._save("last.pt", step, val)
        return val

    def _save(self, name: str, step: int, val: EvalResult | None = None) -> Path:
        """Write a checkpoint (rank 0; every rank takes part, to hand over its random
        states)."""
        path = self.checkpoint_dir / name
        best = self.best
        states = self.dist.gather(rng_state(self.generator))
        if not self.dist.is_main:
            return path
        save_checkpoint(path, {
            "step": step,
            "algorithm": self.algorithm.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.precision.state_dict(),
            "val": None if val is None else val.as_dict(),
            "best": None if best is None else {"step": best[0], **best[1].as_dict()},
            "rng": states[0],
            "rng_ranks": states if self.dist.world > 1 else None,
            "elapsed": self.seconds(),
            "stopped": self.stopped,
            **self.extra,
        }, keep_previous=name == "last.pt")
        return path
