"""The one place that turns a config into objects.

Datasets, samplers, fixed evaluation episodes, backbone, algorithm, optimizer, schedule and
metric sinks are built here, from the config groups' ``_target_`` classes, after the config's
keys have been checked once (:func:`metarun.validate.validate_config`). Everything built takes
explicit arguments; objects that exist only at run time (the backbone, the input shape, the
train split's class count) are passed when instantiating, never written back into the config.
The jobs, the API and ``metarun-eval`` (rebuilding a checkpoint's model) all come through here;
no other module reads a ``DictConfig``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from metarun import configs
from metarun.algorithms.base import Algorithm
from metarun.configs import ENSEMBLE_METHODS, LOCATION_KEYS, parse_duration, trusted_config
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

#: Keys that metarun-eval may set although an older run's config lacks them.
NEWER_KEYS = ("eval.diverged_above",)


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


@dataclass
class Restored:
    """A checkpoint's model rebuilt on the CPU: its checked config, dataset and algorithm."""

    config: DictConfig
    dataset: Dataset
    algorithm: Algorithm


def restore(blob: dict[str, Any], source: str = "checkpoint",
            changes: dict[str, Any] | None = None) -> Restored:
    """Rebuild the model of a checkpoint already read from ``source``
    (:func:`~metarun.engine.checkpoint.load_checkpoint`), with ``changes`` to its config
    (:func:`with_overrides`). Its config is built only after
    :func:`~metarun.configs.trusted_config` has checked that it names nothing but what
    metarun ships.

    Raises:
        ValueError: an untrusted config, no weights, or weights that do not fit the model.
    """
    config = trusted_config(blob, source)  # before anything is imported or built
    config = with_overrides(config, changes) if changes else config
    data = dataset(config)
    learner = algorithm(config, data, blob.get("train_classes"))
    state = blob.get("algorithm")
    if not isinstance(state, dict):
        raise ValueError(f"{source} holds no model weights")
    try:
        learner.load_state_dict(state)
    except RuntimeError as e:  # torch lists every mismatched tensor, over many lines
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"{source}: the saved weights do not fit the model its config "
                         f"describes ({first})") from None
    return Restored(config, data, learner)


# --- metarun-eval: which models, on which episodes -------------------------------------

_MISSING = object()


@dataclass(frozen=True)
class EvalRequest:
    """What a ``metarun-eval`` job evaluates (its config, checked).

    Attributes:
        checkpoints: checkpoint files or run directories.
        method: how to combine several (``None``: one checkpoint, alone).
        split: whose classes the episodes come from.
        device: as for :func:`metarun.load`.
        overrides: run-config keys to change (``eval.*``, ``data.*``, ``algo.*``, ``seed``).
    """

    checkpoints: list[str]
    method: str | None
    split: Split
    device: str
    overrides: dict[str, Any]


def eval_request(cfg: DictConfig) -> EvalRequest:
    """The request of a ``metarun-eval`` config (``conf/evaluate.yaml``).

    Raises:
        ValueError: no checkpoint, several without an ensemble method, an unknown method,
            split or ``eval`` key, a value that is not a positive integer, a bad seed.
    """
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise ValueError("say which model to evaluate: checkpoint=<checkpoint file or run "
                         "directory> (or a list [a,b,...] with ensemble=average|select|fuse)")
    given = cfg.checkpoint
    paths = [str(p) for p in given] if OmegaConf.is_list(given) else [str(given)]
    method = None if cfg.ensemble is None else str(cfg.ensemble)
    if method is None and len(paths) != 1:
        raise ValueError(f"{len(paths)} checkpoints given: choose how to combine them with "
                         f"ensemble={'|'.join(ENSEMBLE_METHODS)}")
    if method is not None and method not in ENSEMBLE_METHODS:
        raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLE_METHODS)}; got "
                         f"{method!r}")
    from metarun.validate import eval_overrides

    overrides = eval_overrides({str(k): v for k, v in cfg.eval.items()},
                               {str(k): v for k, v in (cfg.get("data") or {}).items()},
                               cfg.seed, {str(k): v for k, v in (cfg.get("algo") or {}).items()})
    return EvalRequest(paths, method, Split.parse(str(cfg.split)), str(cfg.device.name),
                       overrides)


def with_overrides(run_config: DictConfig, overrides: dict[str, Any]) -> DictConfig:
    """A copy of a run's config with ``overrides``, each of which must name an existing key.

    Raises:
        ValueError: a key the run's config does not have (for data and algo keys, naming the
            keys it has there), or a value naming what metarun does not ship.
    """
    cfg = run_config.copy()
    for key, value in overrides.items():
        if key in NEWER_KEYS:  # older runs' configs lack them
            OmegaConf.update(cfg, key, value, force_add=True)
            continue
        if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            group = key.split(".", 1)[0]
            if group in ("data", "algo"):  # name what the run's dataset or algorithm has
                raise ValueError(f"{key}: the run's {group} ({cfg[group]._target_}) has no such "
                                 f"key; its keys: {', '.join(map(str, cfg[group]))}")
            raise ValueError(f"{key}: the run's config has no such key")
        OmegaConf.update(cfg, key, value)
    configs.check_stored_config(OmegaConf.to_container(cfg), "metarun-eval's overrides")
    return cfg


def common_episodes(configs: list[DictConfig], overrides: dict[str, Any]) -> DictConfig:
    """The config that defines an ensemble's test episodes, whatever the members' order.

    ``overrides`` win. Otherwise the members must agree on the episode shape and count
    (``eval.ways``, ``eval.shots``, ``eval.queries``, ``eval.test_episodes``), and the seed is
    the smallest member seed (their common seed when they share one).
    """
    cfg = configs[0].copy()
    for key in ("eval.ways", "eval.shots", "eval.queries", "eval.test_episodes"):
        values = {OmegaConf.select(c, key) for c in configs}
        if key not in overrides and len(values) > 1:
            raise ValueError(f"the members differ in {key} ({sorted(values)}); choose one with "
                             f"{key}=N")
    cfg.seed = min(int(c.seed) for c in configs)
    return with_overrides(cfg, overrides)


def data_identity(cfg: DictConfig) -> dict[str, Any]:
    """The data keys that say which tasks (not where the files are): equal for models that
    may be compared or combined."""
    where = {k.removeprefix("data.") for k in LOCATION_KEYS if k.startswith("data.")}
    data = OmegaConf.to_container(cfg.data, resolve=True)
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items() if k not in where}


def architecture(cfg: DictConfig) -> dict[str, Any]:
    """The ``algo`` and ``backbone`` configs: what must match for weights to be averaged."""
    return {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("algo", "backbone")}


def device(cfg: DictConfig) -> torch.device:
    """The run's device, resolved (and cuDNN's autotuner set as ``device`` says)."""
    from metarun.device import resolve_device

    resolved_device = resolve_device(str(cfg.device.name))
    if resolved_device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg.device.get("cudnn_benchmark", False))
    return resolved_device
