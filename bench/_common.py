"""Shared helpers for the benchmarks: timing and a source of Omniglot-shaped episodes."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from metarun.data.episodes import ClassImages, EpisodeSampler
from metarun.data.omniglot import Omniglot
from metarun.types import Split


def time_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def omniglot_train() -> tuple[ClassImages, str]:
    """The Omniglot training split (maml protocol), or random pixels of the same shape."""
    root = os.environ.get("METARUN_DATA") or str(Path(__file__).resolve().parents[2] / "shared"
                                                  / "data")
    cache = os.environ.get("METARUN_CACHE", "~/.cache/metarun/cache")
    if (Path(root) / "omniglot").is_dir():
        return Omniglot(root, cache).load()[Split.TRAIN], "omniglot"
    images = torch.randint(0, 256, (4400, 20, 1, 28, 28), dtype=torch.uint8)
    return ClassImages(images), "random pixels (Omniglot not found)"


def sampler_5w1s15q(bank: ClassImages) -> EpisodeSampler:
    return EpisodeSampler(bank, ways=5, shots=1, queries=15)
