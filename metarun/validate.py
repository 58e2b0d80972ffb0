"""Check the config's core keys before anything is loaded or trained.

Components validate their own arguments when they are built; this catches what would otherwise
only fail after the data has been read (or fail obscurely: a string where a number belongs),
and names the key and what is allowed.
"""

from __future__ import annotations

import numbers
from typing import Any

from omegaconf import DictConfig, OmegaConf

_INT, _NUM = "an integer", "a number"

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
    ("train.iterations", _INT, 1, False),
    ("train.meta_batch", _INT, 1, False),
    ("train.eval_every", _INT, 1, False),
    ("train.log_every", _INT, 1, False),
    ("train.checkpoint_every", _INT, 1, True),
    ("train.lr_step_every", _INT, 1, False),
    ("train.min_lr", _NUM, 0, False),
    ("optim.lr", _NUM, 0, False),
)


def _is(kind: str, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if kind == _INT:
        return isinstance(value, numbers.Integral)
    return isinstance(value, numbers.Real)


def validate_config(cfg: DictConfig) -> None:
    """Raise ``ValueError`` naming the first core key whose value is of the wrong type or out
    of range."""
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
        if value < least:
            raise ValueError(f"{key} must be at least {least:g}; got {value}")
    resume = OmegaConf.select(cfg, "train.resume", default=None)
    if resume is not None and not isinstance(resume, str):
        raise ValueError(f"train.resume must be a run directory or null; got {resume!r}")
