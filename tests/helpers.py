"""Helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from metarun.configs import config_dir
from metarun.types import EpisodeBatch


def compose_config(*overrides: str) -> DictConfig:
    """metarun's config composed with ``overrides``, exactly as the CLI composes it, except
    that runs draw no learning curve unless ``train.plot=true`` is given (0.3 s a run)."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=["train.plot=false", *overrides])


def random_image_batch(tasks: int, ways: int, shots: int, queries: int,
                       seed: int = 0) -> EpisodeBatch:
    """``tasks`` episodes of random 1x28x28 pixels with the usual label layout."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(ways)
    return EpisodeBatch(
        support_x=torch.rand(tasks, ways * shots, 1, 28, 28, generator=g),
        support_y=labels.repeat_interleave(shots).expand(tasks, -1),
        query_x=torch.rand(tasks, ways * queries, 1, 28, 28, generator=g),
        query_y=labels.repeat_interleave(queries).expand(tasks, -1),
        class_ids=labels.expand(tasks, -1),
    )


def assert_png(path: Path) -> None:
    """A real, decodable PNG of a sensible size."""
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] >= 300 and image.size[1] >= 200
