"""The meta-training loop, readable top to bottom.

The trainer alone calls ``zero_grad``, ``backward``, gradient clipping, ``step`` and writes
checkpoints and metrics. Algorithms only return a differentiable loss.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metarun.algorithms.base import Algorithm
from metarun.data.episodes import FixedEpisodes, TrainSampler
from metarun.engine.checkpoint import save_checkpoint
from metarun.engine.evaluate import evaluate
from metarun.engine.metrics import MetricsLog
from metarun.engine.progress import TrainProgress
from metarun.engine.signals import Preempted, StopRequest
from metarun.types import EvalResult

log = logging.getLogger("metarun")


LR_SCHEDULES = ("constant", "cosine", "linear", "step")


def _scheduler(optimizer: torch.optim.Optimizer, name: str, iterations: int, min_lr: float,
               step_every: int, gamma: float) -> torch.optim.lr_scheduler.LRScheduler | None:
    lr = torch.optim.lr_scheduler
    if name == "cosine":
        return lr.CosineAnnealingLR(optimizer, T_max=iterations, eta_min=min_lr)
    if name == "linear":
        # Per group: from its initial lr at step 0 to min_lr after the last step.
        lambdas = [
            (lambda t, base=g["lr"]: 1.0 - (1.0 - min_lr / base) * min(t, iterations)
             / iterations) if g["lr"] > 0 else (lambda t: 1.0)
            for g in optimizer.param_groups
        ]
        return lr.LambdaLR(optimizer, lambdas)
    if name == "step":
        return lr.StepLR(optimizer, step_size=step_every, gamma=gamma)
    return None


class NonFiniteLossError(RuntimeError):
    """The meta-loss or its gradient became NaN or infinite; training stopped before the
    update."""


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state training reads: the episode generator, torch (CPU and CUDA),
    Python's and numpy's global generators, as tensors and plain values."""
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    keys = np.asarray(keys)
    return {
        "episodes": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached],
    }


def set_rng_state(generator: torch.Generator, state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    import numpy as np

    generator.set_state(state["episodes"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))


@dataclass
class TrainResult:
    best_step: int
    best_val: EvalResult
    last_step: int
    seconds: float


class Trainer:
    """Meta-trains ``algorithm`` on episodes from ``sampler``.

    Args:
        algorithm: the learner; its parameters are what ``optimizer`` updates.
        optimizer: built over ``algorithm.parameters()``.
        sampler: what the algorithm trains on, from the train split (already on the device):
            episodes, or whatever :meth:`Algorithm.train_sampler` chose.
        val_episodes: fixed validation episodes.
        iterations: number of meta-updates.
        meta_batch: tasks per meta-update.
        eval_every: validate (and checkpoint) every this many steps, and at the last step.
        log_every: write a training point to ``metrics`` every this many steps.
        seed: seeds the episode generator.
        checkpoint_dir: where ``best.pt`` and ``last.pt`` go.
        metrics: the run's ``metrics.jsonl``.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        lr_schedule: how every learning rate of ``optimizer`` changes, once per meta-update:
            ``"constant"``; ``"cosine"``: from its initial value to ``min_lr`` over
            ``iterations`` steps (MAML++); ``"linear"``: the same, linearly (Reptile's
            annealed outer step size); ``"step"``: multiplied by ``lr_gamma`` every
            ``lr_step_every`` steps (ProtoNet's halving every 2000 episodes).
        min_lr: the final learning rate of the cosine and linear schedules.
        lr_step_every: period of the step schedule.
        lr_gamma: factor of the step schedule.
        checkpoint_extra: plain values stored in every checkpoint (the resolved config).
        checkpoint_every: also write ``last.pt`` every this many steps (``None``: only at
            validations). The checkpoint it replaces is kept as ``last.prev.pt``.
        resume: a checkpoint written by this trainer: training continues after its step with
            its model, optimizer, schedule, best result and random states, so the result is
            the uninterrupted run's. Without random states (an older checkpoint) it continues
            with fresh ones, and says so. A checkpoint of the last step leaves nothing to
            train: :meth:`fit` returns its best result at once.

    The metric that picks the best checkpoint is the algorithm's task type's (accuracy is
    maximised, MSE minimised); a non-finite validation score never becomes the best.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        optimizer: torch.optim.Optimizer,
        sampler: TrainSampler,
        val_episodes: FixedEpisodes,
        iterations: int,
        meta_batch: int,
        eval_every: int,
        log_every: int,
        seed: int,
        checkpoint_dir: Path,
        metrics: MetricsLog,
        grad_clip: float | None = None,
        lr_schedule: str = "constant",
        min_lr: float = 0.0,
        lr_step_every: int = 2000,
        lr_gamma: float = 0.5,
        checkpoint_extra: dict[str, Any] | None = None,
        checkpoint_every: int | None = None,
        resume: dict[str, Any] | None = None,
    ) -> None:
        for key, value in (("train.iterations", iterations), ("train.meta_batch", meta_batch),
                           ("train.eval_every", eval_every), ("train.log_every", log_every)):
            if value < 1:
                raise ValueError(f"{key} must be at least 1; got {value}")
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError(f"train.checkpoint_every must be at least 1 or null; got "
                             f"{checkpoint_every}")
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"train.grad_clip must be positive or null; got {grad_clip}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule must be one of {LR_SCHEDULES}; got "
                             f"{lr_schedule!r}")
        if min_lr < 0:
            raise ValueError(f"train.min_lr must be non-negative; got {min_lr}")
        if lr_step_every < 1 or not 0 < lr_gamma <= 1:
            raise ValueError("train.lr_step_every must be at least 1 and train.lr_gamma in "
                             f"(0, 1]; got {lr_step_every}, {lr_gamma}")
        self.algorithm, self.optimizer, self.sampler = algorithm, optimizer, sampler
        self.val_episodes = val_episodes
        self.iterations, self.meta_batch = iterations, meta_batch
        self.eval_every, self.log_every = eval_every, log_every
        self.grad_clip = grad_clip
        self.checkpoint_dir = checkpoint_dir
        self.metrics = metrics
        self.extra = checkpoint_extra or {}
        self.generator = torch.Generator().manual_seed(seed)
        self.scheduler = _scheduler(optimizer, lr_schedule, iterations, min_lr, lr_step_every,
                                    lr_gamma)
        self.checkpoint_every = checkpoint_every
        self.start_step = 1
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
            self.scheduler.load_state_dict(blob["scheduler"])
        if blob.get("best"):
            b = dict(blob["best"])
            metric = self.algorithm.task_type.metric
            self.best = (int(b["step"]), EvalResult(b[metric], b["ci95"], b["loss"],
                                                    b["episodes"], metric))
        if "rng" in blob:
            set_rng_state(self.generator, blob["rng"])
        else:
            log.warning("the checkpoint holds no random states: episodes after step %d will "
                        "differ from an uninterrupted run's", step)
        self.start_step = step + 1
        if step == self.iterations:  # stopped after the final validation: only the test is left
            log.info("training finished at step %d; meta-testing the best checkpoint", step)
        else:
            log.info("resuming after step %d", step)

    def fit(self) -> TrainResult:
        """Train from :attr:`start_step` to ``iterations``.

        Raises:
            NonFiniteLossError: a NaN or infinite loss or gradient; ``last.pt`` then holds the
                weights before that step.
            Preempted: SIGTERM or SIGINT; ``last.pt`` holds the last finished step.
        """
        t0 = time.perf_counter()
        window_loss = window_score = 0.0
        window = 0
        task_type = self.algorithm.task_type
        metric = task_type.metric
        self.algorithm.train()
        with StopRequest() as stop, TrainProgress(
                self.iterations, log_every=self.log_every, metric=metric,
                percent=task_type.name == "classification") as progress:
            for step in range(self.start_step, self.iterations + 1):
                self.algorithm.scheduled(step)
                batch = self.sampler.sample(self.meta_batch, self.generator)
                # Buffers (batch-norm statistics) change in the forward pass: keep the last
                # good ones, so a non-finite step leaves nothing of itself behind.
                buffers = [(b, b.clone()) for b in self.algorithm.buffers()]
                out = self.algorithm.meta_train_step(batch)
                loss = out.loss.detach().item()
                self.optimizer.zero_grad(set_to_none=True)
                if math.isfinite(loss):
                    out.loss.backward()
                    norm = torch.nn.utils.clip_grad_norm_(
                        self.algorithm.parameters(),
                        self.grad_clip if self.grad_clip is not None else math.inf)
                if not math.isfinite(loss) or not math.isfinite(float(norm)):
                    what = "meta-loss" if not math.isfinite(loss) else "gradient norm"
                    value = loss if not math.isfinite(loss) else float(norm)
                    self.optimizer.zero_grad(set_to_none=True)
                    with torch.no_grad():
                        for b, good in buffers:
                            b.copy_(good)
                    saved = self._save("last.pt", step - 1)
                    raise NonFiniteLossError(
                        f"the {what} is {value} at step {step}; stopped before the update. "
                        f"{saved} holds the weights after step {step - 1}")
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()

                window_loss += loss
                window_score += out.metrics.get(metric, float("nan"))
                window += 1
                progress.update(step, window_loss / window, window_score / window)
                if step % self.log_every == 0 or step == self.iterations:
                    self.metrics.write(step, "train", window_loss / window,
                                       time.perf_counter() - t0,
                                       **{metric: window_score / window}, lr=lr)
                    window_loss = window_score = 0.0
                    window = 0

                saved_now = False
                if step % self.eval_every == 0 or step == self.iterations:
                    val = evaluate(self.algorithm, self.val_episodes)
                    self.algorithm.train()
                    self.metrics.write(step, "val", val.loss, time.perf_counter() - t0,
                                       **{metric: val.score}, ci95=val.ci95)
                    improved = math.isfinite(val.score) and (
                        self.best is None or task_type.better(val.score, self.best[1].score))
                    log.info("step %d: val %s %s over %d episodes%s", step, metric,
                             task_type.format(val.score, val.ci95), val.episodes,
                             " (best so far)" if improved else "")
                    if improved:
                        self.best = (step, val)
                        self._save("best.pt", step, val)
                    self._save("last.pt", step, val)
                    saved_now = True
                elif self.checkpoint_every and step % self.checkpoint_every == 0:
                    self._save("last.pt", step)
                    saved_now = True
                if stop.signal is not None:
                    path = self.checkpoint_dir / "last.pt"
                    if not saved_now:
                        path = self._save("last.pt", step)
                    raise Preempted(step, path, stop.signal)
        if self.best is None:
            raise NonFiniteLossError(
                f"every validation {metric} was non-finite; no best checkpoint was written")
        return TrainResult(self.best[0], self.best[1], self.iterations,
                           time.perf_counter() - t0)

    def _save(self, name: str, step: int, val: EvalResult | None = None) -> Path:
        path = self.checkpoint_dir / name
        best = self.best
        save_checkpoint(path, {
            "step": step,
            "algorithm": self.algorithm.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "val": None if val is None else val.as_dict(),
            "best": None if best is None else {"step": best[0], **best[1].as_dict()},
            "rng": rng_state(self.generator),
            **self.extra,
        }, keep_previous=name == "last.pt")
        return path
