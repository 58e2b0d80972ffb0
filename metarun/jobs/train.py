"""A training run: check the directory, build everything, meta-train, meta-test, summarise.

:func:`run` is what ``metarun`` runs for each job, and what tests call. The objects come from
:mod:`metarun.build`; this module decides only the order of things and what the directory
says at every point: nothing is written before the directory is known to be this run's, and
however the run ends, its summary says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from metarun import build
from metarun.algorithms.base import Algorithm
from metarun.data.episodes import FixedEpisodes
from metarun.engine.checkpoint import load_checkpoint, load_resumable
from metarun.engine.evaluate import evaluate
from metarun.engine.lock import RunLock, is_locked
from metarun.engine.metrics import MetricsLog
from metarun.engine.signals import StopRequest
from metarun.engine.trainer import Trainer
from metarun.errors import (
    NonFiniteLossError,
    PeerError,
    Preempted,
    Pruned,
    RunCompletedError,
    RunLockedError,
    error_text,
)
from metarun.jobs.peers import AGREED, Peers, join, quiet_follower
from metarun.jobs.resume import resume_point
from metarun.jobs.rundir import claim
from metarun.summary import (
    COMPLETED,
    FAILED,
    NON_FINITE,
    PREEMPTED,
    PRUNED,
    TRAIN,
    RunResult,
    paper_section,
    read_summary,
    write_summary,
)
from metarun.types import EpisodeData, EvalResult, Split, TrainResult
from metarun.validate import check_world, validate_config

log = logging.getLogger("metarun")

def run(cfg: DictConfig, output_dir: str | Path,
        prune: Callable[[int, float], bool] | None = None) -> RunResult:
    """Meta-train and meta-test as ``cfg`` says; write everything under ``output_dir``.

    Writes ``metrics.jsonl``, ``checkpoints/best.pt``, ``checkpoints/last.pt`` and, last,
    ``summary.json``. Returns the summary; its best validation score (accuracy, or MSE for
    regression) is the sweep objective.

    The directory is checked before anything is written into it: one that another process is
    using, that holds another command's result, a completed run, or a run of a different
    experiment is refused and left as it was.

    In a data-parallel run (started by torchrun or ``dist.nproc``) rank 0 does all of this,
    in its own ``output_dir``; the other ranks train their shares beside it
    (:mod:`metarun.jobs.peers`) and return its summary.

    ``prune``: an Optuna search's trial (:class:`~metarun.engine.trainer.Trainer`'s); a run
    it stops ends ``pruned``, untested.
    """
    peers = Peers(join(cfg))
    if not peers.dist.is_main:
        return _follow(cfg, peers)
    try:
        return _lead(cfg, Path(output_dir), peers, prune)
    except BaseException as e:
        peers.abort(e)
        raise


def _lead(cfg: DictConfig, output_dir: Path, peers: Peers,
          prune: Callable[[int, float], bool] | None) -> RunResult:
    resume_dir = build.resume_dir(cfg)
    out = Path(resume_dir).expanduser() if resume_dir else output_dir
    if resume_dir and not out.is_dir():
        raise FileNotFoundError(f"train.resume = {resume_dir}: no such run directory")
    config = build.resolved(cfg)
    if is_locked(out):
        raise RunLockedError(f"another metarun process is using {out}; wait for it to finish "
                             "or choose another run directory")
    was_completed = (read_summary(out) or {}).get("status") == COMPLETED
    resume = resume_point(out, config, explicit=bool(resume_dir))  # only reads
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        if not was_completed and (read_summary(out) or {}).get("status") == COMPLETED:
            raise RunCompletedError(out)  # finished meanwhile, by another process
        claim(out, cfg)
        t0 = time.perf_counter()
        try:  # from here on, however the run ends, its summary says so
            with StopRequest(at_once=True):  # until training starts, nothing to checkpoint
                validate_config(cfg)
                check_world(cfg, peers.dist.world)
                peers.start(out, resume)
                return _train(cfg, out, config, resume, t0, peers, prune)
        except BaseException as e:
            write_unfinished(out, e, time.perf_counter() - t0)
            raise


def _follow(cfg: DictConfig, peers: Peers) -> RunResult:
    """A rank other than 0: train its shares in rank 0's run; rank 0 writes everything."""
    quiet_follower()
    out, resume = peers.start()
    built = peers.build(lambda: _build(cfg))
    trainer = Trainer(built.algorithm, val_episodes=built.val,
                      checkpoint_dir=out / "checkpoints", metrics=None, resume=resume,
                      dist=peers.dist, **built.trainer_inputs)
    try:
        trainer.fit()
    except AGREED:
        with suppress(PeerError):
            peers.end()  # rank 0 writes the summary before any rank exits
        raise
    return RunResult(summary=peers.end(), output_dir=str(out))


@dataclass
class _Built:
    """A training run's objects."""

    device: torch.device
    algorithm: Algorithm
    train_classes: int | None
    trainer_inputs: dict[str, Any]
    val: FixedEpisodes
    test: FixedEpisodes


def _build(cfg: DictConfig) -> _Built:
    device = build.device(cfg)
    about = build.info(cfg)
    data = build.dataset(cfg)
    sources = build.splits(data, device)
    classes = build.train_classes(sources)
    torch.manual_seed(about.seed)  # model initialisation; episodes use their own generators
    algorithm = build.algorithm(cfg, data, classes)
    algorithm.check_task(about.task.ways)
    algorithm.check_task(about.eval_task.ways)
    sampler = build.train_sampler(algorithm, sources[Split.TRAIN], about.task)
    val = build.fixed_episodes(cfg, sources, Split.VAL)
    test = build.fixed_episodes(cfg, sources, Split.TEST)
    t = about.task
    log.info("device %s | train/val/test: %s | %d-way %d-shot %d-query | %s", device,
             " / ".join(sources[s].description for s in Split), t.ways, t.shots, t.queries,
             type(algorithm).__name__)
    algorithm.to(device)
    build.speedups(cfg, algorithm)
    optimizer = build.optimizer(cfg, algorithm)
    return _Built(device, algorithm, classes, {
        "optimizer": optimizer, "sampler": sampler, "settings": build.train_settings(cfg),
        "scheduler": build.schedule(cfg, optimizer)}, val, test)


def _train(cfg: DictConfig, out: Path, config: dict[str, Any],
           resume: dict[str, Any] | None, t0: float, peers: Peers,
           prune: Callable[[int, float], bool] | None) -> RunResult:
    built = peers.build(lambda: _build(cfg))
    algorithm = built.algorithm
    resume_step = None if resume is None else int(resume["step"])
    metrics = MetricsLog(out / "metrics.jsonl", resume_step=resume_step,
                         sinks=build.metric_sinks(cfg, out, resume_step))
    try:
        trainer = Trainer(algorithm, val_episodes=built.val, checkpoint_dir=out / "checkpoints",
                          metrics=metrics, resume=resume, dist=peers.dist, prune=prune,
                          **built.trainer_inputs,
                          checkpoint_extra={"config": config,
                                            "train_classes": built.train_classes})
        trained = trainer.fit()
        peers.trained()
        best = load_checkpoint(out / "checkpoints" / "best.pt", map_location=built.device)
        algorithm.load_state_dict(best["algorithm"])
        result = evaluate(algorithm, built.test, build.info(cfg).diverged_above,
                          Split.TEST.progress_label)
        seconds = time.perf_counter() - t0
        metrics.write(trained.best_step, "test", result.loss, seconds,
                      **{result.metric: result.score}, ci95=result.ci95)
    except BaseException as e:
        _finish(cfg, out, metrics, _status(e))
        raise
    _finish(cfg, out, metrics)
    about = build.info(cfg)
    try:
        summary = _completed_summary(about, algorithm, trained, result, built)
        summary.update(seconds=round(seconds, 2), device=str(built.device),
                       processes=peers.dist.world, threads=torch.get_num_threads(),
                       resumed_from_step=resume_step)
        write_summary(out, summary)
    except BaseException:  # the trackers' runs end failed, not left running
        metrics.close(FAILED)
        raise
    metrics.close(COMPLETED)  # after the summary: the trackers keep it
    peers.end(summary)
    task_type, ev = algorithm.task_type, about.eval_task
    log.info("test %s %s (95%% CI, %d episodes, %s; median %s, %d diverged)",
             task_type.metric, task_type.format(result.score, result.ci95), result.episodes,
             task_type.shape(ev.ways, ev.shots), task_type.format(result.median),
             result.diverged)
    paper = summary["paper"]
    if paper and paper["difference"] is not None:
        sign = "+" if paper["difference"] >= 0 else ""
        log.info("paper %s (%s): this run differs by %s%s", task_type.format(
            paper["value"], paper["ci95"]), paper["source"], sign,
            task_type.format(paper["difference"]))
    return RunResult(summary=summary, output_dir=str(out))


def _finish(cfg: DictConfig, out: Path, metrics: MetricsLog, status: str | None = None,
            ) -> None:
    """The learning curve; a failed run's metrics closed with its ``status`` (a completed
    run's trackers are closed once its summary is written)."""
    if status is not None:
        metrics.close(status)
    if build.plot(cfg):
        _plot_curve(out)


def _status(error: BaseException) -> str:
    """The summary status of a run that ``error`` ended."""
    return {Preempted: PREEMPTED, NonFiniteLossError: NON_FINITE, Pruned: PRUNED}.get(
        type(error), FAILED)


def write_unfinished(out: Path, error: BaseException, seconds: float) -> None:
    """Nothing claims success: the summary says how the run ended, and whether running the
    same command again goes on from here (``resumable``): after a stop signal or another
    failure when a checkpoint loads (or, stopped before the first one, by starting over);
    never after a non-finite loss, which the same inputs would meet again."""
    status = _status(error)
    resumable = False
    if status != NON_FINITE:
        try:
            load_resumable(out / "checkpoints")
            resumable = True
        except FileNotFoundError:
            resumable = status == PREEMPTED
        except ValueError:
            pass
    write_summary(out, {"command": TRAIN, "status": status,
                        "error": error_text(error),
                        "resumable": resumable, "seconds": round(seconds, 2)})


def _completed_summary(about: build.RunInfo, algorithm: Algorithm, trained: TrainResult,
                       result: EvalResult, built: _Built) -> dict[str, Any]:
    task_type = algorithm.task_type
    best: EvalResult = trained.best_val
    trained_on = algorithm.training_data(about.task)
    return {
        "command": TRAIN,
        "status": COMPLETED,
        "algo": about.algo,
        "task_type": task_type.name,
        "metric": task_type.metric,
        "higher_is_better": task_type.higher_is_better,
        "task": vars(about.task),
        # the episodes it meta-trained on, where the algorithm changes them (algo.train_ways)
        "train_episodes": vars(trained_on) if isinstance(trained_on, EpisodeData) else None,
        "eval_task": vars(about.eval_task),
        "test": {**result.as_dict(), "episodes_sha256": built.test.digest()},
        "val": {f"best_{task_type.metric}": best.score, "best_ci95": best.ci95,
                "episodes": best.episodes, "episodes_sha256": built.val.digest()},
        "best_step": trained.best_step,
        "steps": trained.last_step,
        "stopped": trained.stopped,
        "max_time": about.max_time,
        "train_seconds": round(trained.seconds, 2),
        "train_seconds_total": trained.elapsed,
        "bn_mode": algorithm.bn_mode,
        "seed": about.seed,
        "paper": paper_section(about.paper, task_type.metric, result.score,
                               about.eval_task.ways, about.eval_task.shots),
    }


def _plot_curve(out: Path) -> None:
    """Draw ``learning_curve.png``; a plot that fails is a warning, never the run's error."""
    from metarun.report.plots import plot_learning_curve

    try:
        plot_learning_curve(out)
    except Exception as e:  # noqa: BLE001 - whatever matplotlib raises
        log.warning("could not draw %s/learning_curve.png: %s", out, e)
