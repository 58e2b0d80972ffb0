"""What a task asks for: class labels (classification) or real values (regression).

The task type is a property of the data (``dataset.task_type``), handed to the algorithm when
it is built. It owns everything that differs between the two: the loss, the reported metric
and which direction of it is better, how a score is written, how many outputs a prediction
head needs, what support targets look like, and how predictions are averaged. Algorithms,
jobs and reports never branch on the task type's name or metric: they ask it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a loss is computed: reports stay light
    import torch
    from torch import Tensor


class TaskType(ABC):
    """The loss and metric of one kind of task.

    Attributes:
        name: ``"classification"`` or ``"regression"``.
        metric: the key of the reported metric (``"acc"``, ``"mse"``).
        higher_is_better: the direction in which ``metric`` improves.
        percent: the metric is a fraction shown in percent (accuracy).
        has_classes: tasks are N-way (a head's width and the episodes' ways matter).
        label: the metric as an axis label.
        log_axis: plot the metric on a log axis (an error that shrinks by orders).
    """

    name: str
    metric: str
    higher_is_better: bool
    percent: bool = False
    has_classes: bool = False
    label: str = ""
    log_axis: bool = False

    @abstractmethod
    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """The differentiable training loss (a scalar)."""

    @abstractmethod
    def score(self, prediction: Tensor, target: Tensor) -> Tensor:
        """The reported metric of one task (a detached scalar)."""

    @abstractmethod
    def constant_loss(self, target: Tensor) -> float:
        """The loss of the best prediction that ignores the input, on ``target``: the scale
        against which a diverged episode's loss is judged."""

    @abstractmethod
    def outputs(self, ways: int) -> int:
        """Width of a prediction head for ``ways``-way tasks."""

    def loss_and_score(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return self.loss(prediction, target), self.score(prediction.detach(), target)

    def better(self, a: float, b: float) -> bool:
        """Whether metric value ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def format(self, value: float, ci95: float | None = None, unit: bool = True) -> str:
        """The one way metarun writes a score: ``98.77% ± 0.12%`` or ``0.0123 ± 0.0010``
        (``unit=False``: no percent sign, for table cells under a ``%`` heading); ``-`` for a
        missing value, and no ``±`` part for a missing interval."""
        if value is None or not math.isfinite(value):
            return "-"
        scale, digits = (100.0, 2) if self.percent else (1.0, 4)
        sign = "%" if self.percent and unit else ""
        text = f"{scale * value:.{digits}f}{sign}"
        if ci95 is not None and math.isfinite(ci95):
            text += f" ± {scale * ci95:.{digits}f}{sign}"
        return text

    def shape(self, ways: int, shots: int) -> str:
        """An episode shape in words: ``5-way 1-shot`` (regression: ``10-shot``)."""
        return f"{ways}-way {shots}-shot"

    def targets(self, values: Tensor | Sequence[int] | Sequence[float], count: int,
                device: torch.device) -> Tensor:
        """Support targets given by a user (:meth:`metarun.api.Learner.adapt`) as the tensor
        an algorithm takes, refusing anything else in one line."""
        raise NotImplementedError

    def average(self, predictions: Tensor) -> Tensor:
        """The mean of ``[M, n, ...]`` predictions of ``M`` models: a prediction of the same
        kind, whose loss is the ensemble's."""
        return predictions.mean(0)

    def ways_of(self, support_y: Tensor) -> int | None:
        """How many classes a support set's labels cover (``None``: no classes)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Classification(TaskType):
    """Labels ``0..N-1``; predictions are logits ``[n, N]``; cross-entropy; accuracy."""

    name, metric, higher_is_better = "classification", "acc", True
    percent, has_classes, label = True, True, "accuracy (%)"

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(prediction, target)

    def score(self, prediction: Tensor, target: Tensor) -> Tensor:
        return (prediction.detach().argmax(-1) == target).float().mean()

    def outputs(self, ways: int) -> int:
        return ways

    def average(self, predictions: Tensor) -> Tensor:
        """The log of the mean class probabilities (so cross-entropy on it is the ensemble's
        negative log-likelihood)."""
        return predictions.softmax(-1).mean(0).log()

    def ways_of(self, support_y: Tensor) -> int | None:
        return int(support_y.max()) + 1

    def constant_loss(self, target: Tensor) -> float:
        """A uniform guess's cross-entropy: ln(number of classes)."""
        return math.log(max(len(target.unique()), 1))

    def targets(self, values: Tensor | Sequence[int] | Sequence[float], count: int,
                device: torch.device) -> Tensor:
        """Labels as a long tensor: the integers 0..N-1, each present, one per support
        image; ``0.5`` is an error, not label 0."""
        import torch

        labels = torch.as_tensor(values)
        if labels.dim() != 1 or len(labels) != count:
            raise ValueError(f"support_y must hold one label per support image ({count}); "
                             f"got shape {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex():
            if not bool((labels == labels.round()).all()):
                raise ValueError("support_y must hold whole-number labels 0..N-1; got "
                                 f"{labels.tolist()}")
        elif labels.dtype == torch.bool:
            raise ValueError("support_y must hold integer labels 0..N-1, not booleans")
        labels = labels.long()
        ways = int(labels.max()) + 1
        if labels.min() < 0 or set(labels.tolist()) != set(range(ways)):
            raise ValueError("support_y must hold one label per support image, covering "
                             "0..N-1 with every label present")
        return labels.to(device)


class Regression(TaskType):
    """Real-valued targets ``[n, D]``; mean squared error is both loss and metric.

    Args:
        target_dim: D, the size of one target.
    """

    name, metric, higher_is_better = "regression", "mse", False
    label, log_axis = "MSE", True

    def __init__(self, target_dim: int = 1) -> None:
        self.target_dim = target_dim

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        import torch.nn.functional as F

        return F.mse_loss(prediction, target)

    def score(self, prediction: Tensor, target: Tensor) -> Tensor:
        import torch.nn.functional as F

        return F.mse_loss(prediction.detach(), target)

    def outputs(self, ways: int) -> int:
        return self.target_dim

    def shape(self, ways: int, shots: int) -> str:
        return f"{shots}-shot"

    def constant_loss(self, target: Tensor) -> float:
        """The MSE of predicting the targets' mean: their variance."""
        return float(((target - target.mean(0)) ** 2).mean())

    def targets(self, values: Tensor | Sequence[int] | Sequence[float], count: int,
                device: torch.device) -> Tensor:
        """Real targets ``[K]`` or ``[K, D]`` as ``[K, D]`` floats."""
        import torch

        targets = torch.as_tensor(values, dtype=torch.float32, device=device)
        targets = targets[:, None] if targets.dim() == 1 else targets
        if len(targets) != count:
            raise ValueError("support_y must hold one target per support input")
        return targets

    def __repr__(self) -> str:
        return f"Regression(target_dim={self.target_dim})"


CLASSIFICATION = Classification()
REGRESSION = Regression()
#: Every task type, by the name of its metric (how summaries and metrics files name it).
BY_METRIC: dict[str, TaskType] = {t.metric: t for t in (CLASSIFICATION, REGRESSION)}


def by_metric(metric: str) -> TaskType:
    """The task type whose metric is ``metric`` (``acc``, ``mse``).

    Raises:
        ValueError: no task type reports that metric.
    """
    try:
        return BY_METRIC[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(BY_METRIC)}") from None
