"""Plain data types that cross module boundaries.

Naming follows the field's convention: *support* and *query* are the two halves of one task,
*train*, *val* and *test* are only ever dataset splits (sets of classes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any, TypeVar

import torch
from torch import Tensor


class Split(str, Enum):
    """A dataset split: a set of classes, disjoint from the other splits."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"


_T = TypeVar("_T", bound="_Tensors")


class _Tensors:
    """Mixin for frozen dataclasses whose fields are all tensors."""

    def to(self: _T, device: torch.device | str) -> _T:
        """A copy with every tensor moved to ``device``."""
        moved = {f.name: getattr(self, f.name).to(device, non_blocking=True)
                 for f in fields(self)}  # type: ignore[arg-type]
        return replace(self, **moved)  # type: ignore[type-var]


@dataclass(frozen=True)
class Episode(_Tensors):
    """One N-way K-shot task.

    Attributes:
        support_x: ``[N*K, C, H, W]`` float images.
        support_y: ``[N*K]`` episode-local labels in ``0..N-1``.
        query_x: ``[N*Q, C, H, W]`` float images, disjoint from the support images.
        query_y: ``[N*Q]`` episode-local labels.
        class_ids: ``[N]`` global class ids; ``class_ids[i]`` is the class labelled ``i``.

    A regression task has the same fields: inputs ``[K, D_in]`` / ``[Q, D_in]``, real targets
    ``[K, D_out]`` / ``[Q, D_out]``, and no classes (``class_ids`` is empty, ``[0]``).
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    class_ids: Tensor

    @property
    def ways(self) -> int:
        return int(self.class_ids.shape[-1])


@dataclass(frozen=True)
class EpisodeBatch(_Tensors):
    """T episodes of the same shape, stacked on a leading task dimension.

    Attributes have the shapes of :class:`Episode` with ``T`` in front, so an algorithm can
    loop over ``batch`` (yielding :class:`Episode`) or vectorise over the first dimension.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    class_ids: Tensor

    def __len__(self) -> int:
        return int(self.support_x.shape[0])

    def __getitem__(self, i: int) -> Episode:
        return Episode(
            self.support_x[i], self.support_y[i], self.query_x[i], self.query_y[i],
            self.class_ids[i],
        )

    def __iter__(self) -> Iterator[Episode]:
        return (self[i] for i in range(len(self)))


@dataclass
class StepOutput:
    """What one meta-training step returns: a differentiable loss and detached metrics."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalResult:
    """Meta-test result over a fixed set of episodes.

    ``score`` is the mean per-episode value of ``metric`` (``"acc"`` for classification,
    ``"mse"`` for regression); ``ci95`` is the half-width of its normal-approximation 95%
    confidence interval: ``1.96 * std(ddof=1) / sqrt(episodes)``.
    """

    score: float
    ci95: float
    loss: float
    episodes: int
    metric: str = "acc"

    def as_dict(self) -> dict[str, float | int]:
        return {self.metric: self.score, "ci95": self.ci95, "loss": self.loss,
                "episodes": self.episodes}


@dataclass
class RunResult:
    """What :func:`metarun.run.run` returns: the summary it wrote, and where."""

    summary: dict[str, Any]
    output_dir: str

    @property
    def objective(self) -> float:
        """The sweep objective: the best validation value of the run's metric (accuracy is
        maximised, MSE minimised; ``summary["higher_is_better"]`` says which)."""
        return float(self.summary["val"][f"best_{self.summary['metric']}"])


@dataclass(frozen=True)
class PairBatch(_Tensors):
    """Image pairs for verification (same class or not), drawn from one split.

    Attributes:
        first: ``[P, C, H, W]`` float images.
        second: ``[P, C, H, W]`` float images.
        same: ``[P]`` float, 1.0 where both images show the same class.
        classes: ``[P, 2]`` the split's class ids of the two images.
    """

    first: Tensor
    second: Tensor
    same: Tensor
    classes: Tensor


@dataclass(frozen=True)
class LabelledBatch(_Tensors):
    """Images with their class ids in a split, for ordinary (non-episodic) classification.

    Attributes:
        x: ``[B, C, H, W]`` float images.
        y: ``[B]`` class ids in ``0..num_classes-1`` of the split.
    """

    x: Tensor
    y: Tensor
