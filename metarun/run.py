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
from metarun.engine.checkpoint import load_checkpoint
from metarun.engine.evaluate import evaluate
from metarun.engine.metrics import MetricsLog
from metarun.engine.trainer import Trainer
from metarun.types import RunResult, Split

log = logging.getLogger("metarun")


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
    sampler = splits[split].sampler(ev.ways, ev.shots, ev.queries)
    return FixedEpisodes(sampler, count, cfg.seed, split.value)


def run(cfg: DictConfig, output_dir: str | Path) -> RunResult:
    """Meta-train and meta-test as ``cfg`` says; write everything under ``output_dir``.

    Writes ``metrics.jsonl``, ``checkpoints/best.pt``, ``checkpoints/last.pt`` and, last,
    ``summary.json``. Returns the summary; its best validation score (accuracy, or MSE for
    regression) is the sweep objective.
    """
    t0 = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    resolved = OmegaConf.to_container(cfg, resolve=True)
    metrics = MetricsLog(out / "metrics.jsonl")
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
    }
    _write_json(out / "summary.json", summary)
    shape = f"{ev.ways}-way {ev.shots}-shot" if task_type.name == "classification" \
        else f"{ev.shots}-shot"
    log.info("test %s %s (95%% CI, %d episodes, %s)", task_type.metric,
             task_type.format(result.score, result.ci95), result.episodes, shape)
    return RunResult(summary=summary, output_dir=str(out))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
