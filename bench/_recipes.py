"""A results row's recipe: the config its command composes now, and whether a run or a record
was made by it (``bench/results.py``). A command line can stay the same while the config
files behind it change; comparing the composed configs catches that."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from metarun.configs import config_dir, leaves
from metarun.jobs.resume import SAME_RUN_CHANGES, differences


def recipe(overrides: list[str]) -> dict[str, Any] | None:
    """The config ``metarun <overrides>`` composes now, as Hydra writes it into the run's
    ``.hydra/config.yaml`` (interpolations unresolved, so it does not depend on where the data
    are); ``None`` for a command that does not compose."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
    except HydraException:
        return None
    plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    return {str(k): v for k, v in plain.items()}


def fingerprint(config: dict[str, Any] | None) -> str | None:
    """The SHA-256 of a recipe, without the keys a re-run may change (where things are, the
    device, loggers): what a record keeps to tell whether it is still the row's result.

    Null values are left out, as ``differences`` (resume) takes a missing key for a null one: a
    key added to the configs later with a null default, the behaviour from before it existed,
    leaves the records of earlier runs standing."""
    if config is None:
        return None
    kept = {k: v for k, v in leaves(config, lists=False)
            if v is not None and not k.startswith(SAME_RUN_CHANGES)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def changed_recipe(out: Path, config: dict[str, Any] | None) -> list[str]:
    """The keys in which the run in ``out`` was composed otherwise than ``config``."""
    try:
        before = yaml.safe_load((out / ".hydra" / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return ["its .hydra/config.yaml (missing or unreadable)"]
    return differences(before, config or {}, SAME_RUN_CHANGES)
