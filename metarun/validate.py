"""Check a config before anything is loaded or trained.

Components validate their own arguments when they are built; this catches what would otherwise
only fail after the data has been read (or fail obscurely: a string where a number belongs, a
NaN learning rate that surfaces as a non-finite loss, a key the component does not take), and
names the key and what is allowed. Every check here holds for every component's keys, not
only the core's: numbers must be finite, each ``_target_`` node may only hold keys its class
takes, and (:func:`check_value_types`) a value the command line changed keeps the type of the
default it replaced.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from metarun.configs import leaves, parse_duration

_INT, _NUM = "an integer", "a number"
#: torch seeds are 64-bit signed integers.
MAX_SEED = 2**63 - 1

#: (key, kind, least allowed value, may be null)
RULES: tuple[tuple[str, str, float, bool], ...] = (
    ("seed", _INT, 0, False),
    ("task.ways", _INT, 1, False),
    ("task.shots", _INT, 1, False),
    ("task.queries", _INT, 1, False),
    ("eval.ways", _INT, 1, False),
    ("eval.shots", _INT, 1, False),
    ("eval.queries", _INT, 1, False),
    ("eval.val_episodes", _INT, 1, False),
    ("eval.test_episodes", _INT, 1, False),
    ("eval.diverged_above", _NUM, 0, True),
    ("train.iterations", _INT, 1, False),
    ("train.meta_batch", _INT, 1, False),
    ("train.eval_every", _INT, 1, False),
    ("train.log_every", _INT, 1, False),
    ("train.checkpoint_every", _INT, 1, True),
    ("train.lr_step_every", _INT, 1, False),
    ("train.min_lr", _NUM, 0, False),
    ("optim.lr", _NUM, 0, False),
    ("dist.nproc", _INT, 1, False),
    ("threads", _INT, 1, True),
)


def _is(kind: str, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if kind == _INT:
        return isinstance(value, numbers.Integral)
    return isinstance(value, numbers.Real)


def validate_config(cfg: DictConfig) -> None:
    """Raise ``ValueError`` naming the first key whose value is of the wrong type or out of
    range: the core keys' rules, then finiteness and the components' keys."""
    _check_rules(cfg)
    _check_schedule(cfg)
    check_paper(OmegaConf.select(cfg, "paper", default=None))
    check_finite(cfg)
    check_component_keys(cfg)
    check_world(cfg, OmegaConf.select(cfg, "dist.nproc", default=1))
    _check_precision(cfg)
    name = OmegaConf.select(cfg, "device.name", default=None)
    if name is not None:
        from metarun.device import resolve_device

        resolve_device(str(name))  # device=cuda without CUDA: refused here, before any work

def _check_precision(cfg: DictConfig) -> None:
    from metarun.engine.precision import PRECISIONS

    precision = OmegaConf.select(cfg, "train.precision", default="32")
    if str(precision) not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}; got "
                         f"{precision!r}")


def check_world(cfg: DictConfig, processes: int) -> None:
    """Every process of a data-parallel run takes an equal share of each meta-batch."""
    meta_batch = OmegaConf.select(cfg, "train.meta_batch", default=1)
    nproc = OmegaConf.select(cfg, "dist.nproc", default=1)
    if nproc not in (1, processes):
        raise ValueError(f"dist.nproc = {nproc} but the launcher started {processes} "
                         "processes: leave dist.nproc at 1 under torchrun")
    if processes > 1 and meta_batch % processes:
        raise ValueError(f"train.meta_batch = {meta_batch} cannot be divided between "
                         f"{processes} processes: choose a multiple of {processes}")


def _check_rules(cfg: DictConfig) -> None:
    for key, kind, least, nullable in RULES:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            if nullable or not OmegaConf.select(cfg, key.rsplit(".", 1)[0], default=None):
                continue
            raise ValueError(f"{key} must be set ({kind})")
        if not _is(kind, value):
            raise ValueError(f"{key} must be {kind}; got {value!r}")
        if key == "optim.lr" and value <= 0:
            raise ValueError(f"optim.lr must be positive; got {value}")
        if not math.isfinite(value):
            raise ValueError(f"{key} must be finite; got {value}")
        if value < least:
            raise ValueError(f"{key} must be at least {least:g}; got {value}")
        if key == "seed" and value > MAX_SEED:
            raise ValueError(f"seed must be at most 2**63 - 1 = {MAX_SEED}; got {value}")


def _check_schedule(cfg: DictConfig) -> None:
    """The keys of ``train`` that are not plain counts: schedule, its factor, clipping."""
    from metarun.engine.schedules import SCHEDULES

    train = OmegaConf.select(cfg, "train", default=None)
    if not train:
        return
    name = train.get("lr_schedule", "constant")
    if name not in SCHEDULES:
        raise ValueError(f"train.lr_schedule must be one of {', '.join(SCHEDULES)}; got "
                         f"{name!r}")
    gamma = train.get("lr_gamma", 0.5)
    if _is(_NUM, gamma) and not 0 < gamma <= 1:
        raise ValueError(f"train.lr_gamma must be in (0, 1]; got {gamma}")
    parse_duration(train.get("max_time"))
    clip = train.get("grad_clip")
    if clip is not None and (not _is(_NUM, clip) or clip <= 0):
        raise ValueError(f"train.grad_clip must be a positive number or null; got {clip!r}")


def check_paper(paper: Any) -> None:
    """An experiment's ``paper`` entry: ``metric`` (``acc`` or ``mse``), ``value`` in that
    metric's unit (accuracy as a fraction), optional ``ci95``, ``source``, ``ways`` and
    ``shots`` of the evaluation it was reported for."""
    if paper is None:
        return
    from metarun.summary import PAPER_KEYS
    from metarun.tasktypes import BY_METRIC

    if not isinstance(paper, DictConfig):
        raise ValueError(f"paper must be a mapping with {', '.join(PAPER_KEYS)}; got {paper!r}")
    unknown = sorted(set(paper) - set(PAPER_KEYS))
    if unknown:
        raise ValueError(f"paper.{unknown[0]} is not a paper key; the keys: "
                         f"{', '.join(PAPER_KEYS)}")
    metric, value = paper.get("metric"), paper.get("value")
    if metric not in BY_METRIC:
        raise ValueError(f"paper.metric must be one of {', '.join(BY_METRIC)}; got {metric!r}")
    for key in ("value", "ci95"):
        if paper.get(key) is not None and not _is(_NUM, paper.get(key)):
            raise ValueError(f"paper.{key} must be a number; got {paper.get(key)!r}")
    if value is None or not isinstance(paper.get("source"), str):
        raise ValueError("paper needs a value and a source (where the number was published)")
    if BY_METRIC[metric].percent and not 0 <= value <= 1:
        raise ValueError(f"paper.value is an accuracy as a fraction (98.8% is 0.988); got "
                         f"{value}")
    for key in ("ways", "shots"):
        if not _is(_INT, paper.get(key)) or paper.get(key) < 1:
            raise ValueError(f"paper.{key} must be a positive integer (the evaluation shape "
                             f"the number was reported for); got {paper.get(key)!r}")


def _plain(cfg: DictConfig) -> dict[str, Any]:
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    return {str(k): v for k, v in plain.items()}


def check_finite(cfg: DictConfig) -> None:
    """Refuse NaN and infinity in any key (none of metarun's settings means anything by
    them)."""
    for key, value in leaves(_plain(cfg)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number; got {value}")


def check_component_keys(cfg: DictConfig) -> None:
    """Every place where metarun's config files build a component has a ``_target_``, and
    every ``_target_`` node holds only keys its class takes (an added ``+algo.bogus=1`` is
    named here, not in a ``TypeError`` from deep inside Hydra)."""
    from hydra.utils import get_class

    from metarun.configs import shipped_targets

    for where in shipped_targets():
        node = OmegaConf.select(cfg, where, default=None)
        if isinstance(node, DictConfig) and "_target_" not in node:
            raise ValueError(f"{where}._target_ must be set: it names the class that "
                             f"{where} builds")
    for where, node in _components(_plain(cfg)):
        try:
            cls = get_class(str(node["_target_"]))
            params = inspect.signature(cls).parameters
        except Exception as e:  # noqa: BLE001 - an unimportable target, in one line
            raise ValueError(f"{where}._target_ = {node['_target_']!r} cannot be imported: "
                             f"{e}") from None
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            continue
        for key in node:
            if not (key.startswith("_") and key.endswith("_")) and key not in params:
                settings = ", ".join(p for p in params if p != "self")
                raise ValueError(f"{where}.{key} is not a setting of {node['_target_']}; "
                                 f"its settings: {settings}")


def _components(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if "_target_" in node:
            yield where, node
        for key, value in node.items():
            if where or key != "hydra":
                yield from _components(value, f"{where}.{key}" if where else str(key))


def check_value_types(cfg: DictConfig, defaults: DictConfig) -> None:
    """A value that replaced a number (or a list of numbers) of ``defaults`` (the same config
    without the command line's values) must be one too: ``algo.inner_lr=abc`` is named here.

    Raises:
        ValueError: naming the key, the kind of value expected and the value given.
    """
    before = dict(leaves(_plain(defaults)))
    now = _plain(cfg)
    for key in {k.rsplit("[", 1)[0] for k in before if k.endswith("]")}:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not isinstance(value, (list, ListConfig)):
            raise ValueError(f"{key} must be a list like {OmegaConf.select(defaults, key)}; "
                             f"got {value!r}")
    for key, value in leaves(now):
        old = before.get(key)
        if isinstance(old, bool) or not isinstance(old, numbers.Real) or value is None:
            continue
        kind = _INT if isinstance(old, numbers.Integral) else _NUM
        if not _is(kind, value):
            raise ValueError(f"{key} must be {kind}; got {value!r}")


#: ``metarun-eval``'s ``eval.*`` keys: the run config's own ``eval`` keys, same meaning.
EVAL_KEYS = ("ways", "shots", "queries", "val_episodes", "test_episodes", "diverged_above")


def eval_overrides(eval_keys: dict[str, Any], data: dict[str, Any],
                   seed: int | None, algo: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run-config keys that ``metarun-eval``'s ``eval.*``, ``data.*``, ``algo.*`` and
    ``seed`` set.

    Raises:
        ValueError: an ``eval`` key metarun does not have, a count that is not a positive
            integer, a bad bound, a seed that ``metarun`` would refuse, or ``algo._target_``
            (the checkpoint's algorithm is the one evaluated).
    """
    out: dict[str, Any] = {}
    for key, value in eval_keys.items():
        if value is None:
            continue
        if key not in EVAL_KEYS:
            raise ValueError(f"eval.{key} is not an evaluation setting; choose from "
                             f"{', '.join(f'eval.{k}' for k in EVAL_KEYS)}")
        if key == "diverged_above":  # a loss bound, not a count
            if not _is(_NUM, value) or not 0 <= value < math.inf:
                raise ValueError(f"eval.diverged_above must be a finite number >= 0; got "
                                 f"{value!r}")
        elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"eval.{key} must be a positive integer; got {value!r}")
        out[f"eval.{key}"] = value
    out.update({f"data.{key}": value for key, value in data.items()})
    if "_target_" in (algo or {}):
        raise ValueError("algo._target_ cannot be changed: metarun-eval evaluates the "
                         "checkpoint's own algorithm (its other algo keys can be)")
    out.update({f"algo.{key}": value for key, value in (algo or {}).items()})
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer from 0 to 2**63 - 1 (as for metarun); "
                             f"got {seed!r}")
        out["seed"] = seed
    return out
