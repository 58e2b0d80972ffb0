"""Sinusoid regression (Finn, Abbeel & Levine, ICML 2017, section 5.1).

Each task is a sine wave ``y = A sin(x - phi)`` with amplitude ``A`` and phase ``phi`` drawn
uniformly; its support and query sets are K and Q points with ``x`` uniform in an interval.
Nothing is read from disk, so this is the dataset that runs anywhere. The three splits draw
from the same family of functions; they differ only in the seeds of their episodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metarun.tasktypes import Regression
from metarun.types import EpisodeBatch, Split, TaskIndex


@dataclass(frozen=True)
class SineIndex(TaskIndex):
    """A batch of sine tasks (CPU tensors).

    Attributes:
        amplitude: ``[T]``.
        phase: ``[T]``.
        x: ``[T, K+Q]`` inputs; the first K are the support set.
    """

    amplitude: Tensor
    phase: Tensor
    x: Tensor


@dataclass(frozen=True)
class SineFamily:
    """The distribution of sine tasks of one split, and the device tasks are built on."""

    amplitude: tuple[float, float]
    phase: tuple[float, float]
    x_range: tuple[float, float]
    device: torch.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> SineFamily:
        return SineFamily(self.amplitude, self.phase, self.x_range, torch.device(device))

    @property
    def description(self) -> str:
        return "sine tasks"

    def sampler(self, ways: int, shots: int, queries: int,
                setting: str = "task") -> SineSampler:
        """A K-shot sampler (``ways`` must be 1: a task is one function; ``setting`` names the
        config keys in errors)."""
        return SineSampler(self, ways, shots, queries, setting)


class SineSampler:
    """Draws K-shot Q-query sine tasks.

    Args:
        family: amplitude, phase and input ranges.
        ways: must be 1 (``task.ways``): regression tasks have no classes.
        shots: K, support points per task.
        queries: Q, query points per task.
    """

    def __init__(self, family: SineFamily, ways: int, shots: int, queries: int,
                 setting: str = "task") -> None:
        if ways != 1:
            raise ValueError(
                f"{setting}.ways must be 1 for regression tasks (one function per task); got "
                f"{ways}. "
                "Choose a regression task option: task=k5, task=k10 or task=k20"
            )
        if shots < 1 or queries < 1:
            raise ValueError(f"{setting}.shots and {setting}.queries must be at least 1; got "
                             f"{shots}, {queries}")
        self.family, self.shots, self.queries = family, shots, queries

    def sample_indices(self, n: int, generator: torch.Generator) -> SineIndex:
        """Draw ``n`` tasks with ``generator`` (a CPU generator)."""
        f = self.family

        def uniform(bounds: tuple[float, float], *shape: int) -> Tensor:
            lo, hi = bounds
            return lo + (hi - lo) * torch.rand(*shape, generator=generator)

        return SineIndex(amplitude=uniform(f.amplitude, n), phase=uniform(f.phase, n),
                         x=uniform(f.x_range, n, self.shots + self.queries))

    def materialize(self, index: SineIndex) -> EpisodeBatch:
        """The tasks' inputs ``[T, K|Q, 1]`` and targets ``[T, K|Q, 1]`` on the device."""
        device = self.family.device
        x = index.x.to(device)[..., None]
        y = index.amplitude.to(device)[:, None, None] * torch.sin(
            x - index.phase.to(device)[:, None, None])
        k = self.shots
        return EpisodeBatch(
            support_x=x[:, :k], support_y=y[:, :k], query_x=x[:, k:], query_y=y[:, k:],
            class_ids=torch.zeros(len(index), 0, dtype=torch.long, device=device),
        )

    def sample(self, n: int, generator: torch.Generator) -> EpisodeBatch:
        return self.materialize(self.sample_indices(n, generator))


class Sinusoid:
    """Sine-wave regression tasks.

    Args:
        amplitude: ``[low, high]`` of the uniform amplitude (the paper: ``[0.1, 5.0]``).
        phase: ``[low, high]`` of the uniform phase (the paper: ``[0, pi]``).
        x_range: ``[low, high]`` of the uniform inputs (the paper: ``[-5, 5]``).
    """

    input_shape = (1,)
    task_type = Regression(target_dim=1)

    def __init__(self, amplitude: Sequence[float] = (0.1, 5.0),
                 phase: Sequence[float] = (0.0, math.pi),
                 x_range: Sequence[float] = (-5.0, 5.0)) -> None:
        self.family = SineFamily(
            _interval("data.amplitude", amplitude, minimum=0.0),
            _interval("data.phase", phase),
            _interval("data.x_range", x_range),
        )

    def load(self) -> dict[Split, SineFamily]:
        """One task family per split (the same family: the splits differ in their seeds)."""
        return {split: self.family for split in Split}

    def preprocess(self, xs: Sequence[Any]) -> Tensor:
        """Numbers to model input ``[B, 1]`` (float32)."""
        return torch.as_tensor(xs, dtype=torch.float32).reshape(-1, 1)


def _interval(key: str, value: Sequence[float], minimum: float | None = None
              ) -> tuple[float, float]:
    bounds = tuple(float(v) for v in value)
    if len(bounds) != 2 or not bounds[0] < bounds[1] or not all(map(math.isfinite, bounds)):
        raise ValueError(f"{key} must be [low, high] with low < high; got {list(value)}")
    if minimum is not None and bounds[0] < minimum:
        raise ValueError(f"{key} must not go below {minimum}; got {list(value)}")
    return bounds[0], bounds[1]
