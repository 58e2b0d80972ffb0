"""The contract every algorithm keeps.

An :class:`Algorithm` owns meta-parameters and nothing else: no optimizer, no device
placement, no files, no logging. The trainer calls :meth:`Algorithm.meta_train_step` (forward
only) and does the backward pass and the update itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from metarun.tasktypes import CLASSIFICATION, Classification, TaskType
from metarun.types import Episode, EpisodeData, StepOutput, TrainingData

BN_MODES = ("batch", "running")


def positive_or_none(name: str, value: int | None) -> int | None:
    """``value`` if it is ``None`` or a positive integer (``algo.<name>``); else an error."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ValueError(f"algo.{name} must be a positive integer or null; got {value!r}")
    return value


class Predictor:
    """Predicts the query set of one task after adaptation.

    Calling it returns predictions for ``query_x`` ``[n_query, ...]`` (classification: logits
    ``[n_query, ways]``; regression: values ``[n_query, D]``), with the algorithm's batch-norm
    mode and without building a graph.
    """

    def __init__(self, algorithm: Algorithm, fn: Callable[[Tensor], Tensor]) -> None:
        self._algorithm, self._fn = algorithm, fn

    def __call__(self, query_x: Tensor) -> Tensor:
        with self._algorithm.inference(), torch.no_grad():
            return self._fn(query_x)


class Algorithm(nn.Module, ABC):
    """Base class of meta-learning algorithms.

    Args:
        bn_mode: how batch norm behaves when adapting and predicting at meta-test time.
            ``"batch"``: each forward pass normalises with the statistics of its own batch
            (the support set, then the query set) and running statistics are left untouched
            (transductive, as in MAML's reported results). ``"running"``: the running
            statistics accumulated during meta-training are used (no information flows
            between query images).
        task_type: the data's task type (loss, metric, head width); passed at run time.
        train_queries: queries per class in the meta-training episodes (``None``: the
            task's); meta-test keeps ``eval.queries``, so the fixed test episodes do not change.

    Subclasses list the task types they can learn in ``task_types``. One that needs the
    number of classes of the train split (a classifier over all of them) sets
    ``uses_train_classes`` and takes a ``train_classes`` argument.
    """

    task_types: tuple[type[TaskType], ...] = (Classification,)
    uses_train_classes: ClassVar[bool] = False

    def __init__(self, bn_mode: str = "running", task_type: TaskType = CLASSIFICATION,
                 train_queries: int | None = None) -> None:
        super().__init__()
        self.train_queries = positive_or_none("train_queries", train_queries)
        if bn_mode not in BN_MODES:
            raise ValueError(f"algo.bn_mode must be one of {BN_MODES}; got {bn_mode!r}")
        if not isinstance(task_type, self.task_types):
            names = " and ".join(t.name for t in self.task_types)
            raise ValueError(
                f"{type(self).__name__} learns {names} tasks only; "
                f"this dataset's tasks are {task_type.name}"
            )
        self.bn_mode = bn_mode
        self.task_type = task_type

    def training_data(self, task: EpisodeData) -> TrainingData:
        """What this algorithm meta-trains on, given the configured training ``task`` shape;
        the builder draws it from the train split, and it is the ``batch`` of
        :meth:`meta_train_step`.

        The default: those N-way K-shot episodes, with ``train_queries`` queries per class
        where set, else the task's (an :class:`~metarun.types.EpisodeBatch` per step).
        Learners that train on something else return :class:`~metarun.types.PairData`
        (verification pairs) or
        :class:`~metarun.types.ImageData` (labelled images).
        """
        return EpisodeData(task.ways, task.shots, self.train_queries or task.queries)

    @abstractmethod
    def meta_train_step(self, batch: Any) -> StepOutput:
        """Forward pass of one meta-training step: the meta-loss over ``batch`` and metrics.

        ``batch`` is what :meth:`training_data` declares (by default an
        :class:`~metarun.types.EpisodeBatch`).

        The returned loss is differentiable w.r.t. the meta-parameters; ``metrics`` holds
        detached floats, at least the task type's metric on the query sets
        (``metrics[self.task_type.metric]``).
        """

    @abstractmethod
    def _adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        """Adapt to a support set; return a function from query inputs to predictions."""

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Predictor:
        """Adapt to one task's support set.

        Args:
            support_x: ``[N*K, C, H, W]`` images (regression: ``[K, input_dim]``).
            support_y: ``[N*K]`` labels in ``0..N-1`` (regression: ``[K, D]`` targets).

        Returns:
            A :class:`Predictor` mapping ``query_x`` to predictions.
        """
        with self.inference():
            fn = self._adapt(support_x, support_y)
        return Predictor(self, fn)

    def check_task(self, ways: int) -> None:
        """Raise ``ValueError`` if this algorithm cannot be evaluated on ``ways``-way tasks."""

    def check_labels(self, support_y: Tensor) -> None:
        """For classification, check the support labels' way count with :meth:`check_task`."""
        ways = self.task_type.ways_of(support_y)
        if ways is not None:
            self.check_task(ways)

    def evaluate(self, episode: Episode) -> tuple[float, float]:
        """Adapt to the support set, then return (query loss, query metric)."""
        prediction = self.adapt(episode.support_x, episode.support_y)(episode.query_x)
        loss, score = self.task_type.loss_and_score(prediction, episode.query_y)
        return float(loss), float(score)

    def scheduled(self, step: int) -> None:
        """Called by the trainer before meta-training step ``step`` (1-based).

        Algorithms whose behaviour follows a schedule (MAML++'s annealing) update it here;
        the default does nothing.
        """

    @property
    def second_order(self) -> bool:
        """Whether meta-training differentiates through inner-loop gradients (second-order
        MAML and its family), which float16 and ``torch.compile`` cannot do."""
        return False

    def norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        """Every batch-norm module of the algorithm."""
        return [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    @contextmanager
    def vmap_safe_norms(self) -> Iterator[None]:
        """Batch norm in the form that ``torch.func.vmap`` differentiates correctly, for the
        duration: norms that offer it (``separate_affine``: the backbones' batch norm, see
        ``metarun/backbones/norm.py``) apply their scale and shift outside the fused kernel;
        outside the block they use the faster fused kernel."""
        norms: list[Any] = [m for m in self.norms() if hasattr(m, "separate_affine")]
        for m in norms:
            m.separate_affine = True
        try:
            yield
        finally:
            for m in norms:
                m.separate_affine = False

    def vmap_tasks(self, fn: Callable[..., Any], *tasks: Tensor) -> Any:
        """``fn`` over every task of a meta-batch at once, under ``torch.func.vmap``
        (``tasks``: tensors whose first dimension is the task), with batch norm as vmap needs
        it: each task's own batch statistics, the running ones untouched
        (:meth:`running_stats_off`), the scale and shift outside the fused kernel
        (:meth:`vmap_safe_norms`)."""
        with self.running_stats_off(), self.vmap_safe_norms():
            return torch.func.vmap(fn)(*tasks)

    @contextmanager
    def running_stats_off(self) -> Iterator[None]:
        """Batch norm without reading or writing running statistics, for the duration: in
        training mode each forward pass normalises with its own batch statistics."""
        norms = self.norms()
        tracked = [m.track_running_stats for m in norms]
        for m in norms:
            m.track_running_stats = False
        try:
            yield
        finally:
            for m, t in zip(norms, tracked, strict=True):
                m.track_running_stats = t

    @contextmanager
    def inference(self) -> Iterator[None]:
        """Put the modules in meta-test mode for the duration, honouring ``bn_mode``."""
        was_training = self.training
        self.eval()
        try:
            if self.bn_mode == "batch":
                # Batch statistics, and the running buffers neither read nor updated.
                for m in self.norms():
                    m.train()
                with self.running_stats_off():
                    yield
            else:
                yield
        finally:
            self.train(was_training)
