"""The types and interfaces that cross module boundaries: episodes and what algorithms
train on, and the Dataset, Backbone and sampler contracts. Imports nothing else of metarun
but the task types.

Naming follows the field's convention: *support* and *query* are the two halves of one task,
*train*, *val* and *test* are only ever dataset splits (sets of classes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor, nn

from metarun.tasktypes import TaskType


class Split(str, Enum):
    """A dataset split: a set of classes, disjoint from the other splits."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"

    @classmethod
    def parse(cls, name: str) -> Split:
        """The split called ``name``; ``ValueError`` naming the splits otherwise."""
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"split must be one of {[s.value for s in cls]}; got "
                             f"{name!r}") from None

    @property
    def progress_label(self) -> str:
        """What an evaluation on this split is called in progress lines: the meta-test is on
        the test classes; on the others it is an evaluation, not a meta-test."""
        return "meta-test" if self is Split.TEST else f"evaluation on {self.value}"


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
    confidence interval: ``1.96 * std(ddof=1) / sqrt(episodes)``. ``median`` and
    ``diverged`` say whether a few episodes dominate the mean.
    """

    score: float
    ci95: float
    loss: float
    episodes: int
    metric: str = "acc"
    #: the median per-episode ``metric`` (one exploding task cannot move it).
    median: float = float("nan")
    #: episodes whose loss is not finite or above ``diverged_above``.
    diverged: int = 0
    diverged_above: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return {self.metric: self.score, "ci95": self.ci95, "loss": self.loss,
                "episodes": self.episodes, "median": self.median, "diverged": self.diverged,
                "diverged_above": self.diverged_above}


#: Why training stopped (``summary.json`` ``stopped``).
STOPPED_ITERATIONS, STOPPED_MAX_TIME = "iterations", "max_time"


@dataclass
class TrainResult:
    """What meta-training ended with (:meth:`metarun.engine.trainer.Trainer.fit`): the best
    validation and its step, the last step, and this process's seconds."""

    best_step: int
    best_val: EvalResult
    last_step: int
    seconds: float
    #: :data:`STOPPED_ITERATIONS` or :data:`STOPPED_MAX_TIME`.
    stopped: str = STOPPED_ITERATIONS
    #: the run's training seconds over all its resumes (what ``max_time`` is measured on).
    elapsed: float = 0.0


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


# What an algorithm meta-trains on (Algorithm.training_data); the builder makes the sampler.
@dataclass(frozen=True)
class EpisodeData:
    """N-way K-shot Q-query episodes (an :class:`EpisodeBatch` per step)."""

    ways: int
    shots: int
    queries: int


@dataclass(frozen=True)
class PairData:
    """Verification pairs (a :class:`PairBatch` per step): ``pairs`` per task,
    ``same_fraction`` of them from one class."""

    pairs: int
    same_fraction: float


@dataclass(frozen=True)
class ImageData:
    """Labelled images over every training class (a :class:`LabelledBatch` per step):
    ``batch_size`` per task, from a train split of ``classes`` classes (the head's width)."""

    batch_size: int
    classes: int


TrainingData = EpisodeData | PairData | ImageData


_I = TypeVar("_I", bound="TaskIndex")


class TaskIndex:
    """Mixin for frozen dataclasses that describe a batch of tasks with CPU tensors, one row
    per task: enough to rebuild the tasks, small enough to hash."""

    def __len__(self) -> int:
        return int(getattr(self, fields(self)[0].name).shape[0])  # type: ignore[arg-type]

    def __getitem__(self: _I, s: slice) -> _I:
        return replace(self, **{f.name: getattr(self, f.name)[s]  # type: ignore
                                for f in fields(self)})  # type: ignore[arg-type]

    @classmethod
    def cat(cls: type[_I], parts: list[_I]) -> _I:
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                      for f in fields(cls)})  # type: ignore[arg-type]

    def update_hash(self, h: hashlib._Hash) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            h.update(getattr(self, f.name).contiguous().numpy().tobytes())


class TaskSampler(Protocol):
    """A split's episode sampler: draw task indices with a CPU generator, then build them
    (so fixed evaluation episodes are indices, hashed and rebuilt on any device)."""

    def sample_indices(self, n: int, generator: torch.Generator) -> Any: ...

    def materialize(self, index: Any) -> EpisodeBatch: ...

    def sample(self, n: int, generator: torch.Generator) -> EpisodeBatch: ...


class TrainSampler(Protocol):
    """What the trainer draws from: ``n`` groups (tasks, pair groups, image batches) per step
    with a CPU generator. Episode samplers are one kind."""

    def sample(self, n: int, generator: torch.Generator) -> Any: ...


@runtime_checkable
class TaskSource(Protocol):
    """One split of a dataset: a set of classes, or a family of functions."""

    @property
    def description(self) -> str: ...

    def to(self, device: torch.device | str) -> TaskSource: ...

    def sampler(self, ways: int, shots: int, queries: int,
                setting: str = "task") -> TaskSampler: ...


@runtime_checkable
class ClassSource(TaskSource, Protocol):
    """A split made of classes of images, which non-episodic training (pairs, labelled images)
    can draw from (:class:`metarun.data.bank.ClassImages`). Classes may differ in size:
    ``per_class`` is the smallest, ``max_count`` the largest, ``class_counts`` each one's."""

    @property
    def num_classes(self) -> int: ...

    @property
    def per_class(self) -> int: ...

    @property
    def max_count(self) -> int: ...

    @property
    def uniform(self) -> bool: ...

    @property
    def class_counts(self) -> Tensor: ...

    #: ``[num_classes]`` index of each class's first image in the split (CPU).
    starts: Tensor

    @property
    def device(self) -> torch.device: ...

    def draw(self, keys: Tensor, classes: Tensor, k: int) -> Tensor:
        """``k`` distinct image ids per class from random keys ``[..., max_count]``."""
        ...

    def gather(self, classes: Tensor, images: Tensor,
               generator: torch.Generator | None = None) -> Tensor:
        """Model input ``[n, C, H, W]`` of images (ids within class) of ``classes``."""
        ...


class Dataset(Protocol):
    """A dataset (``data=`` config group): splits of disjoint classes and how raw inputs become
    model inputs.

    Attributes:
        task_type: what its tasks ask for (classification, regression).
        input_shape: the shape of one model input (``[C, H, W]`` images, ``[D]`` vectors).
    """

    task_type: TaskType

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    def load(self) -> dict[Split, TaskSource]:
        """Every split, on the CPU (reading, decoding or downloading as needed)."""
        ...

    def preprocess(self, raw: Sequence[Any]) -> Tensor:
        """Raw inputs (PIL images, arrays, numbers) to a batch of model inputs."""
        ...


class Backbone(nn.Module):
    """A feature extractor (``backbone=`` config group): ``[B, *input_shape]`` to
    ``[B, out_dim]``. Subclasses set both attributes in ``__init__``; ``feature_shape``,
    ``(C, H, W)``, where the embedding is a feature map flattened (the Relation Network's
    ``conv`` module convolves it again), else ``None`` (pooled or not spatial)."""

    input_shape: tuple[int, ...]
    out_dim: int
    feature_shape: tuple[int, int, int] | None = None
