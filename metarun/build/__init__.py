"""The one place that turns a config into objects.

Datasets, samplers, fixed evaluation episodes, backbone, algorithm, optimizer, schedule and
metric sinks are built here, from the config groups' ``_target_`` classes, after the config's
keys have been checked once (:func:`metarun.validate.validate_config`). Everything built takes
explicit arguments; objects that exist only at run time (the backbone, the input shape, the
train split's class count) are passed when instantiating, never written back into the config.
The jobs, the API and ``metarun-eval`` (rebuilding a checkpoint's model: :mod:`.saved`) all
come through this package; no other module reads a ``DictConfig``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from metarun.algorithms.base import Algorithm
from metarun.configs import parse_duration
from metarun.data.batches import ImageSampler, PairSampler
from metarun.data.episodes import FixedEpisodes
from metarun.engine import speed, trackers
from metarun.engine.metrics import MetricsSink
from metarun.engine.schedules import ScheduleSettings, make_schedule
from metarun.engine.trainer import TrainSettings
from metarun.types import (
    ClassSource,
    Dataset,
    EpisodeData,
    ImageData,
    PairData,
    Split,
    TaskSource,
    TrainSampler,
)


@dataclass(frozen=True)
class RunInfo:
    """What a job reports about the run a config describes (plain values)."""

    algo: str
    seed: int
    task: EpisodeData
    eval_task: EpisodeData
    test_episodes: int
    max_time: float | None = None
    #: ``eval.diverged_above``: the loss above which a test episode counts as diverged.
    diverged_above: float | None = None
    #: the experiment's published result (``paper``), as plain values, or ``None``.
    paper: dict[str, Any] | None = None


def info(cfg: DictConfig) -> RunInfo:
    """The algorithm's name, seed, episode shapes, time budget and paper of a run config."""
    task, ev = cfg.task, cfg.eval
    paper = cfg.get("paper")
    return RunInfo(algo=str(cfg.algo._target_).rsplit(".", 1)[-1], seed=int(cfg.seed),
                   task=EpisodeData(task.ways, task.shots, task.queries),
                   eval_task=EpisodeData(ev.ways, ev.shots, ev.queries),
                   test_episodes=int(ev.test_episodes),
                   max_time=parse_duration(OmegaConf.select(cfg, "train.max_time",
                                                            default=None)),
                   diverged_above=OmegaConf.select(cfg, "eval.diverged_above", default=None),
                   paper=None if paper is None else resolved(paper))


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` (or any mapping node of it) as plain, resolved values (what checkpoints store)."""
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    return {str(k): v for k, v in out.items()}


def dataset(cfg: DictConfig) -> Dataset:
    """The ``data`` group's dataset (nothing is read until :meth:`Dataset.load`)."""
    built: Dataset = instantiate(cfg.data)
    return built


def splits(data: Dataset, device: torch.device) -> dict[Split, TaskSource]:
    """Every split of ``data``, on ``device``."""
    return {s: source.to(device) for s, source in data.load().items()}


def algorithm(cfg: DictConfig, data: Dataset, train_classes: int | None = None) -> Algorithm:
    """The backbone and algorithm of ``cfg`` for ``data``'s inputs and task type, freshly
    initialised (on the CPU). ``train_classes`` (the train split's class count) is passed to
    algorithms that classify over all training classes."""
    backbone = instantiate(cfg.backbone, input_shape=tuple(data.input_shape))
    extra: dict[str, Any] = {}
    if getattr(get_class(cfg.algo._target_), "uses_train_classes", False):
        if not train_classes:
            raise ValueError(f"{cfg.algo._target_} classifies over the train split's classes; "
                             "this dataset's train split has none")
        extra["train_classes"] = train_classes
    built = instantiate(cfg.algo, backbone=backbone, task_type=data.task_type, **extra)
    if not isinstance(built, Algorithm):
        raise TypeError(f"algo._target_ must build a metarun Algorithm; got {type(built)}")
    return built


def speedups(cfg: DictConfig, learner: Algorithm) -> None:
    """``train.channels_last`` and ``train.compile`` (:mod:`metarun.engine.speed`)."""
    speed.apply(learner, bool(cfg.train.get("channels_last")), cfg.train.get("compile") or False)


def train_classes(sources: dict[Split, TaskSource]) -> int | None:
    """The train split's class count (``None`` for a split without classes)."""
    train = sources[Split.TRAIN]
    return train.num_classes if isinstance(train, ClassSource) else None


def train_sampler(learner: Algorithm, source: TaskSource, task: EpisodeData) -> TrainSampler:
    """What ``learner`` declares it trains on (:meth:`Algorithm.training_data`), drawn from
    the train split ``source``."""
    wanted = learner.training_data(task)
    if isinstance(wanted, EpisodeData):
        return source.sampler(wanted.ways, wanted.shots, wanted.queries)
    what = "image pairs" if isinstance(wanted, PairData) else "labelled images"
    if not isinstance(source, ClassSource):
        raise ValueError(f"{type(learner).__name__} trains on {what}; this dataset has no "
                         "classes of images")
    if isinstance(wanted, PairData):
        return PairSampler(source, wanted.pairs, wanted.same_fraction)
    assert isinstance(wanted, ImageData)
    if source.num_classes != wanted.classes:
        raise ValueError(f"the train split has {source.num_classes} classes; this model's head "
                         f"has {wanted.classes}")
    return ImageSampler(source, wanted.batch_size)


def fixed_episodes(cfg: DictConfig, sources: dict[Split, TaskSource],
                   split: Split) -> FixedEpisodes:
    """The run's fixed episodes of ``split`` (shape from ``eval``; ``eval.val_episodes`` of
    them for validation, ``eval.test_episodes`` for any other split)."""
    ev = cfg.eval
    count = ev.val_episodes if split is Split.VAL else ev.test_episodes
    sampler = sources[split].sampler(ev.ways, ev.shots, ev.queries, setting="eval")
    return FixedEpisodes(sampler, count, cfg.seed, split.value)


def train_settings(cfg: DictConfig) -> TrainSettings:
    t = cfg.train
    return TrainSettings(iterations=t.iterations, meta_batch=t.meta_batch,
                         eval_every=t.eval_every, log_every=t.log_every, seed=cfg.seed,
                         grad_clip=t.grad_clip, checkpoint_every=t.checkpoint_every,
                         max_time=parse_duration(t.get("max_time")),
                         precision=str(t.get("precision", "32")))


def optimizer(cfg: DictConfig, learner: Algorithm) -> torch.optim.Optimizer:
    """The ``optim`` group's optimizer over ``learner``'s parameters (optim configs are
    ``_partial_``)."""
    built: torch.optim.Optimizer = instantiate(cfg.optim)(learner.parameters())
    return built


def schedule(cfg: DictConfig,
             optim: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``train.lr_schedule`` over ``optim`` (:mod:`metarun.engine.schedules`)."""
    t = cfg.train
    return make_schedule(optim, t.lr_schedule, ScheduleSettings(
        iterations=t.iterations, min_lr=t.min_lr, step_every=t.lr_step_every,
        gamma=t.lr_gamma))


def metric_sinks(cfg: DictConfig, run_dir: Path, resume_step: int | None) -> list[MetricsSink]:
    """Where the metrics also go: one guarded sink per logger chosen (``logger`` group,
    :mod:`metarun.engine.trackers`); a resumed run's sinks re-do the points after
    ``resume_step``."""
    args = {"run_dir": str(run_dir), "purge_step": None if resume_step is None else
            resume_step + 1, "run_config": resolved(cfg), "_recursive_": False, "_convert_": "all"}
    started = (trackers.start(name, functools.partial(instantiate, conf, **args))
               for name, conf in (cfg.get("logger") or {}).items())
    return [sink for sink in started if sink is not None]


def plot(cfg: DictConfig) -> bool:
    return bool(cfg.train.get("plot", True))


def resume_dir(cfg: DictConfig) -> str | None:
    """``train.resume``: a run directory to continue, or ``None``."""
    value = cfg.train.get("resume")
    if value is not None and not isinstance(value, str):
        raise ValueError(f"train.resume must be a run directory or null; got {value!r}")
    return value or None


def device(cfg: DictConfig) -> torch.device:
    """The run's device, resolved (and cuDNN's autotuner set as ``device`` says)."""
    from metarun.device import resolve_device

    resolved_device = resolve_device(str(cfg.device.name))
    if resolved_device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg.device.get("cudnn_benchmark", False))
    return resolved_device
