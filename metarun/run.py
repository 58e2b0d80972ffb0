"""One run: build everything from the config, meta-train, meta-test, write the summary.

:func:`run` is the only code that reads the config. Everything it builds takes explicit
arguments; objects that exist only at run time (the backbone, the input shape) are passed when
instantiating, never written back into the config.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from metarun.algorithms.base import Algorithm
from metarun.configs import LOCATION_KEYS
from metarun.data.episodes import FixedEpisodes, TaskSource
from metarun.device import resolve_device
from metarun.engine.checkpoint import load_checkpoint, load_resumable
from metarun.engine.evaluate import evaluate
from metarun.engine.lock import RunLock, RunLockedError, is_locked
from metarun.engine.metrics import MetricsLog
from metarun.engine.signals import Preempted, StopRequest
from metarun.engine.trainer import NonFiniteLossError, Trainer
from metarun.rundir import (
    OutputDirError,
    claim,
    describe,
    is_training_summary,
    read_summary,
    write_summary,
)
from metarun.types import RunResult, Split
from metarun.validate import validate_config

log = logging.getLogger("metarun")


class RunCompletedError(ValueError):
    """The run directory already holds a completed run (a multirun skips it)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(f"{directory} already holds a completed run; choose another "
                         "hydra.run.dir")
        self.directory = directory

    @property
    def objective(self) -> float:
        """The completed run's sweep objective (what a re-run sweep reports for it)."""
        return RunResult(read_summary(self.directory) or {}, str(self.directory)).objective


def build_algorithm(cfg: DictConfig, dataset: Any, train_classes: int | None = None) -> Algorithm:
    """The backbone and algorithm of ``cfg`` for ``dataset``'s inputs and task type, freshly
    initialised (on the CPU). ``train_classes`` (the train split's class count) is passed to
    algorithms that classify over all training classes."""
    backbone = instantiate(cfg.backbone, input_shape=tuple(dataset.input_shape))
    extra: dict[str, Any] = {}
    if getattr(get_class(cfg.algo._target_), "uses_train_classes", False):
        if not train_classes:
            raise ValueError(f"{cfg.algo._target_} classifies over the train split's classes; "
                             "this dataset's train split has none")
        extra["train_classes"] = train_classes
    algorithm = instantiate(cfg.algo, backbone=backbone, task_type=dataset.task_type, **extra)
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algo._target_ must build a metarun Algorithm; got {type(algorithm)}")
    return algorithm


def fixed_episodes(cfg: DictConfig, splits: dict[Split, TaskSource],
                   split: Split) -> FixedEpisodes:
    """The run's fixed validation or test episodes (shape from ``cfg.eval``)."""
    ev = cfg.eval
    count = ev.val_episodes if split is Split.VAL else ev.test_episodes
    sampler = splits[split].sampler(ev.ways, ev.shots, ev.queries, setting="eval")
    return FixedEpisodes(sampler, count, cfg.seed, split.value)


def run(cfg: DictConfig, output_dir: str | Path) -> RunResult:
    """Meta-train and meta-test as ``cfg`` says; write everything under ``output_dir``.

    Writes ``metrics.jsonl``, ``checkpoints/best.pt``, ``checkpoints/last.pt`` and, last,
    ``summary.json``. Returns the summary; its best validation score (accuracy, or MSE for
    regression) is the sweep objective.

    The directory is checked before anything is written into it: one that another process is
    using, that holds another command's result, a completed run, or a run of a different
    experiment is refused and left as it was.
    """
    resume_dir = cfg.train.get("resume")
    if resume_dir is not None and not isinstance(resume_dir, str):
        raise ValueError(f"train.resume must be a run directory or null; got {resume_dir!r}")
    out = Path(resume_dir).expanduser() if resume_dir else Path(output_dir)
    if resume_dir and not out.is_dir():
        raise FileNotFoundError(f"train.resume = {resume_dir}: no such run directory")
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    if is_locked(out):
        raise RunLockedError(f"another metarun process is using {out}; wait for it to finish "
                             "or choose another run directory")
    resume = _resume_point(out, resolved, explicit=bool(resume_dir))  # only reads
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        if (read_summary(out) or {}).get("status") == "completed":  # finished meanwhile
            raise RunCompletedError(out)
        claim(out, cfg)
        t0 = time.perf_counter()
        try:  # from here on, however the run ends, its summary says so
            with StopRequest(at_once=True):  # until training starts, nothing to checkpoint
                validate_config(cfg)
                return _run_claimed(cfg, out, resolved, resume, t0)
        except BaseException as e:
            _write_unfinished(out, e, time.perf_counter() - t0)
            raise


#: Keys in which a re-run may differ from a completed run and still be the same run.
SAME_RUN_CHANGES = (*LOCATION_KEYS, "device.", "logger.")
#: Keys that may change when a run is resumed: those, and how long to train.
RESUMABLE_CHANGES = (*SAME_RUN_CHANGES, "train.iterations")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _differences(before: Any, now: dict[str, Any], allowed: tuple[str, ...]) -> list[str]:
    """The dotted keys whose values differ between two resolved configs, except ``allowed``."""
    old, new = _flatten(before if isinstance(before, dict) else {}), _flatten(now)
    return sorted(k for k in old.keys() | new.keys()
                  if old.get(k) != new.get(k) and not k.startswith(allowed))


def _resume_point(out: Path, resolved: dict[str, Any], explicit: bool) -> dict[str, Any] | None:
    """The checkpoint to continue from, or ``None`` for a fresh run. Only reads ``out``.

    Raises:
        RunCompletedError: ``out`` holds a completed run of this experiment.
        OutputDirError: it holds a completed run of another experiment, or another command's
            result.
        ValueError: its checkpoint belongs to a different experiment, or none loads.
    """
    summary = read_summary(out)
    if summary is None:
        log.warning("%s/summary.json is damaged; going by the run's checkpoints", out)
    elif summary and not is_training_summary(summary):
        raise OutputDirError(f"{out} holds {describe(summary)}, not a training run; choose "
                             "another hydra.run.dir")
    checkpoints = out / "checkpoints"
    if not (checkpoints / "last.pt").exists() and not (checkpoints / "last.prev.pt").exists():
        if summary and summary.get("status") == "completed":
            raise OutputDirError(f"{out} already holds a completed run whose checkpoints are "
                                 "missing; choose another hydra.run.dir")
        if explicit:
            raise FileNotFoundError(f"train.resume = {out}: no checkpoint to resume from")
        return None
    try:
        blob, path = load_resumable(checkpoints)
    except ValueError as e:
        _mark_not_resumable(out, summary, str(e))
        raise
    if summary and summary.get("status") == "completed":
        changed = _differences(blob.get("config"), resolved, SAME_RUN_CHANGES)
        if changed:
            raise OutputDirError(f"{out} already holds a completed run with different "
                                 f"{', '.join(changed)}; choose another directory")
        raise RunCompletedError(out)
    changed = _differences(blob.get("config"), resolved, RESUMABLE_CHANGES)
    if changed:
        raise ValueError(f"cannot resume {out}: the run was started with different "
                         f"{', '.join(changed)}; only {', '.join(RESUMABLE_CHANGES)} may "
                         "change on resume")
    log.info("resuming %s from %s (step %d)", out, path, blob["step"])
    return blob


def _mark_not_resumable(out: Path, summary: dict[str, Any] | None, error: str) -> None:
    """A summary that promised a resume which cannot work is corrected, so that it no longer
    says ``resumable: true``."""
    if summary and summary.get("resumable"):
        write_summary(out, {**summary, "resumable": False, "error": error})


def _run_claimed(cfg: DictConfig, out: Path, resolved: dict[str, Any],
                 resume: dict[str, Any] | None, t0: float) -> RunResult:
    device = resolve_device(cfg.device.name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg.device.cudnn_benchmark)
    task = cfg.task
    dataset = instantiate(cfg.data)
    splits = {s: bank.to(device) for s, bank in dataset.load().items()}
    train_classes = getattr(splits[Split.TRAIN], "num_classes", None)
    torch.manual_seed(cfg.seed)  # model initialisation; episodes use their own generators
    algorithm = build_algorithm(cfg, dataset, train_classes)
    algorithm.check_task(task.ways)
    algorithm.check_task(cfg.eval.ways)
    train_sampler = algorithm.train_sampler(splits[Split.TRAIN], task.ways, task.shots,
                                            task.queries)
    val = fixed_episodes(cfg, splits, Split.VAL)
    test = fixed_episodes(cfg, splits, Split.TEST)
    log.info("device %s | train/val/test: %s | %d-way %d-shot %d-query | %s",
             device, " / ".join(splits[s].description for s in Split), task.ways, task.shots,
             task.queries, type(algorithm).__name__)

    algorithm.to(device)
    optimizer = instantiate(cfg.optim)(algorithm.parameters())  # optim configs are _partial_
    resume_step = None if resume is None else int(resume["step"])
    sinks = [instantiate(cfg.logger, run_dir=str(out),
                         purge_step=None if resume_step is None else resume_step + 1)
             ] if cfg.get("logger") else []
    metrics = MetricsLog(out / "metrics.jsonl", resume_step=resume_step, sinks=sinks)
    try:
        trainer = Trainer(
            algorithm, optimizer, train_sampler, val,
            iterations=cfg.train.iterations, meta_batch=cfg.train.meta_batch,
            eval_every=cfg.train.eval_every, log_every=cfg.train.log_every, seed=cfg.seed,
            checkpoint_dir=out / "checkpoints", metrics=metrics,
            grad_clip=cfg.train.grad_clip, lr_schedule=cfg.train.lr_schedule,
            min_lr=cfg.train.min_lr, lr_step_every=cfg.train.lr_step_every,
            lr_gamma=cfg.train.lr_gamma,
            checkpoint_extra={"config": resolved, "train_classes": train_classes},
            checkpoint_every=cfg.train.checkpoint_every, resume=resume,
        )
        trained = trainer.fit()
        best = load_checkpoint(out / "checkpoints" / "best.pt", map_location=device)
        algorithm.load_state_dict(best["algorithm"])
        result = evaluate(algorithm, test)
        seconds = time.perf_counter() - t0
        metrics.write(trained.best_step, "test", result.loss, seconds,
                      **{result.metric: result.score}, ci95=result.ci95)
    finally:
        metrics.close()
        if cfg.train.get("plot", True):
            _plot_curve(out)
    summary = _completed_summary(cfg, algorithm, trained, result, val, test)
    summary.update(seconds=round(seconds, 2), device=str(device), resumed_from_step=resume_step)
    write_summary(out, summary)
    ev = cfg.eval
    shape = f"{ev.ways}-way {ev.shots}-shot" if algorithm.task_type.name == "classification" \
        else f"{ev.shots}-shot"
    log.info("test %s %s (95%% CI, %d episodes, %s)", algorithm.task_type.metric,
             algorithm.task_type.format(result.score, result.ci95), result.episodes, shape)
    return RunResult(summary=summary, output_dir=str(out))


def _write_unfinished(out: Path, error: BaseException, seconds: float) -> None:
    """Nothing claims success: the summary says how the run ended, and whether running the
    same command again goes on from here (``resumable``): after a stop signal or another
    failure when a checkpoint loads (or, stopped before the first one, by starting over);
    never after a non-finite loss, which the same inputs would meet again."""
    status = {Preempted: "preempted", NonFiniteLossError: "non_finite"}.get(type(error),
                                                                             "failed")
    resumable = False
    if status != "non_finite":
        try:
            load_resumable(out / "checkpoints")
            resumable = True
        except FileNotFoundError:
            resumable = status == "preempted"
        except ValueError:
            pass
    write_summary(out, {"status": status, "error": f"{type(error).__name__}: {error}",
                        "resumable": resumable, "seconds": round(seconds, 2)})


def _completed_summary(cfg: DictConfig, algorithm: Algorithm, trained: Any, result: Any,
                       val: FixedEpisodes, test: FixedEpisodes) -> dict[str, Any]:
    task, ev, task_type = cfg.task, cfg.eval, algorithm.task_type
    return {
        "status": "completed",
        "algo": cfg.algo._target_.rsplit(".", 1)[-1],
        "task_type": task_type.name,
        "metric": task_type.metric,
        "higher_is_better": task_type.higher_is_better,
        "task": {"ways": task.ways, "shots": task.shots, "queries": task.queries},
        "eval_task": {"ways": ev.ways, "shots": ev.shots, "queries": ev.queries},
        "test": {**result.as_dict(), "episodes_sha256": test.digest()},
        "val": {f"best_{task_type.metric}": trained.best_val.score,
                "best_ci95": trained.best_val.ci95,
                "episodes": trained.best_val.episodes, "episodes_sha256": val.digest()},
        "best_step": trained.best_step,
        "steps": trained.last_step,
        "train_seconds": round(trained.seconds, 2),
        "bn_mode": algorithm.bn_mode,
        "seed": cfg.seed,
    }


def _plot_curve(out: Path) -> None:
    """Draw ``learning_curve.png``; a plot that fails is a warning, never the run's error."""
    from metarun.report.plots import plot_learning_curve

    try:
        plot_learning_curve(out)
    except Exception as e:  # noqa: BLE001 - whatever matplotlib raises
        log.warning("could not draw %s/learning_curve.png: %s", out, e)
