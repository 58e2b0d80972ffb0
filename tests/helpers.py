"""Helpers shared by the tests."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from metarun.cli import _config_dir


def compose_config(*overrides: str) -> DictConfig:
    """metarun's config composed with ``overrides``, exactly as the CLI composes it."""
    with initialize_config_dir(config_dir=_config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))
