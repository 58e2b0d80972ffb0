"""Saved models rebuilt from their checkpoints, and what ``metarun-eval`` evaluates: the
request its config makes, a run's config with the request's changes, and the episodes an
ensemble's members share. Built with :mod:`metarun.build`'s builders, as a run's own model is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from metarun.algorithms.base import Algorithm
from metarun.build import algorithm, dataset
from metarun.configs import ENSEMBLE_METHODS, LOCATION_KEYS, check_stored_config, trusted_config
from metarun.types import Dataset, Split

#: Keys that metarun-eval may set although an older run's config lacks them.
NEWER_KEYS = ("eval.diverged_above",)


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
        raise ValueError(f"{source}: the saved weights do not fit the model its config "
                         f"describes ({_first_mismatch(e)})") from None
    return Restored(config, data, learner)


def _first_mismatch(error: RuntimeError) -> str:
    """The first of torch's lines that name mismatched tensors (its first line names only the
    module), shortened to fit one line."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    first = lines[1] if len(lines) > 1 else lines[0]
    return first if len(first) <= 240 else first[:237] + "..."


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
    check_stored_config(OmegaConf.to_container(cfg), "metarun-eval's overrides")
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
