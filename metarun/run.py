"""One run: build everything from the config, meta-train, meta-test, write the summary.

:func:`run` is the only code that reads the config. Everything it builds takes explicit
arguments; objects that exist only at run time (the backbone, the input shape) are passed when
instantiating, never written back into the config.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from metarun.algorithms.base import Algorithm
from metarun.data.episodes import FixedEpisodes, TaskSource
from metarun.device import resolve_device
from metarun.engine.checkpoint import load_checkpoint, load_resumable
from metarun.engine.evaluate import evaluate
from metarun.engine.lock import RunLock
from metarun.engine.metrics import MetricsLog
from metarun.engine.trainer import NonFiniteLossError, Preempted, Trainer
from metarun.types import RunResult, Split
from metarun.validate import validate_config

log = logging.getLogger("metarun")


class RunCompletedError(ValueError):
    """The run directory already holds a completed run (a multirun skips it)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(f"{directory} already holds a completed run; choose another "
                         "hydra.run.dir")
        self.directory = directory


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
    """
    validate_config(cfg)
    resume_dir = cfg.train.get("resume")
    out = Path(resume_dir).expanduser() if resume_dir else Path(output_dir)
    if resume_dir and not out.is_dir():
        raise FileNotFoundError(f"train.resume = {resume_dir}: no such run directory")
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        return _run_locked(cfg, out, explicit_resume=bool(resume_dir))


#: Keys that may change when a run is resumed: where things are, how long, how often to log.
RESUMABLE_CHANGES = ("train.iterations", "train.resume", "train.log_every",
                     "train.checkpoint_every", "train.plot", "device.", "logger.", "data.root",
                     "data.cache_dir", "data.download")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _resume_point(out: Path, resolved: dict[str, Any], explicit: bool) -> dict[str, Any] | None:
    """The checkpoint to continue from, ``None`` for a fresh run, or an error for a finished
    run or a changed experiment."""
    summary = out / "summary.json"
    if summary.exists():
        try:
            status = json.loads(summary.read_text(encoding="utf-8")).get("status")
        except (json.JSONDecodeError, OSError):
            status = None
        if status == "completed":
            raise RunCompletedError(out)
    checkpoints = out / "checkpoints"
    if not (checkpoints / "last.pt").exists() and not (checkpoints / "last.prev.pt").exists():
        if explicit:
            raise FileNotFoundError(f"train.resume = {out}: no checkpoint to resume from")
        return None
    blob, path = load_resumable(checkpoints)
    before, now = _flatten(blob.get("config", {})), _flatten(resolved)
    changed = sorted(k for k in before.keys() | now.keys()
                     if before.get(k) != now.get(k) and not k.startswith(RESUMABLE_CHANGES))
    if changed:
        raise ValueError(f"cannot resume {out}: the run was started with different "
                         f"{', '.join(changed)}; only {', '.join(RESUMABLE_CHANGES)} may "
                         "change on resume")
    log.info("resuming %s from %s (step %d)", out, path, blob["step"])
    return blob


def _run_locked(cfg: DictConfig, out: Path, explicit_resume: bool) -> RunResult:
    t0 = time.perf_counter()
    device = resolve_device(cfg.device.name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg.device.cudnn_benchmark)
    task, ev = cfg.task, cfg.eval

    dataset = instantiate(cfg.data)
    splits = {s: bank.to(device) for s, bank in dataset.load().items()}
    train_classes = getattr(splits[Split.TRAIN], "num_classes", None)
    torch.manual_seed(cfg.seed)  # model initialisation; episodes use their own generators
    algorithm = build_algorithm(cfg, dataset, train_classes)
    algorithm.check_task(task.ways)
    algorithm.check_task(ev.ways)

    train_sampler = algorithm.train_sampler(splits[Split.TRAIN], task.ways, task.shots,
                                            task.queries)
    val = fixed_episodes(cfg, splits, Split.VAL)
    test = fixed_episodes(cfg, splits, Split.TEST)
    log.info("device %s | train/val/test: %s | %d-way %d-shot %d-query | %s",
             device, " / ".join(splits[s].description for s in Split), task.ways, task.shots,
             task.queries, type(algorithm).__name__)

    algorithm.to(device)
    optimizer = instantiate(cfg.optim)(algorithm.parameters())  # optim configs are _partial_
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    resume = _resume_point(out, resolved, explicit_resume)
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
    except BaseException as e:
        # Nothing claims success: the summary says how the run ended and how to go on.
        status = {Preempted: "preempted", NonFiniteLossError: "non_finite"}.get(type(e),
                                                                                  "failed")
        _write_json(out / "summary.json", {
            "status": status, "error": f"{type(e).__name__}: {e}",
            "resumable": (out / "checkpoints" / "last.pt").exists(),
            "seconds": round(time.perf_counter() - t0, 2)})
        raise
    finally:
        metrics.close()
        if cfg.train.get("plot", True):
            _plot_curve(out)

    task_type = algorithm.task_type
    summary: dict[str, Any] = {
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
        "seconds": round(seconds, 2),
        "train_seconds": round(trained.seconds, 2),
        "device": str(device),
        "bn_mode": algorithm.bn_mode,
        "seed": cfg.seed,
        "resumed_from_step": None if resume is None else int(resume["step"]),
    }
    _write_json(out / "summary.json", summary)
    shape = f"{ev.ways}-way {ev.shots}-shot" if task_type.name == "classification" \
        else f"{ev.shots}-shot"
    log.info("test %s %s (95%% CI, %d episodes, %s)", task_type.metric,
             task_type.format(result.score, result.ci95), result.episodes, shape)
    return RunResult(summary=summary, output_dir=str(out))


def _plot_curve(out: Path) -> None:
    """Draw ``learning_curve.png``; a plot that fails is a warning, never the run's error."""
    from metarun.report.plots import plot_learning_curve

    try:
        plot_learning_curve(out)
    except Exception as e:  # noqa: BLE001 - whatever matplotlib raises
        log.warning("could not draw %s/learning_curve.png: %s", out, e)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
