"""What a task asks for: class labels (classification) or real values (regression).

The task type is a property of the data (``dataset.task_type``), handed to the algorithm when
it is built. It owns everything that differs between the two: the loss, the reported metric
and which direction of it is better, and how many outputs a prediction head needs.
Algorithms never branch on the dataset.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch.nn.functional as F
from torch import Tensor


class TaskType(ABC):
    """The loss and metric of one kind of task.

    Attributes:
        name: ``"classification"`` or ``"regression"``.
        metric: the key of the reported metric (``"acc"``, ``"mse"``).
        higher_is_better: the direction in which ``metric`` improves.
    """

    name: str
    metric: str
    higher_is_better: bool

    @abstractmethod
    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """The differentiable training loss (a scalar)."""

    @abstractmethod
    def score(self, prediction: Tensor, target: Tensor) -> Tensor:
        """The reported metric of one task (a detached scalar)."""

    @abstractmethod
    def outputs(self, ways: int) -> int:
        """Width of a prediction head for ``ways``-way tasks."""

    def loss_and_score(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return self.loss(prediction, target), self.score(prediction.detach(), target)

    def better(self, a: float, b: float) -> bool:
        """Whether metric value ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def format(self, value: float, ci95: float) -> str:
        """``value ± ci95`` as people read it (accuracy in percent)."""
        return f"{value:.4f} ± {ci95:.4f}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Classification(TaskType):
    """Labels ``0..N-1``; predictions are logits ``[n, N]``; cross-entropy; accuracy."""

    name, metric, higher_is_better = "classification", "acc", True

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(prediction, target)

    def score(self, prediction: Tensor, target: Tensor) -> Tensor:
        return (prediction.detach().argmax(-1) == target).float().mean()

    def outputs(self, ways: int) -> int:
        return ways

    def format(self, value: float, ci95: float) -> str:
        return f"{100 * value:.2f}% ± {100 * ci95:.2f}%"


class Regression(TaskType):
    """Real-valued targets ``[n, D]``; mean squared error is both loss and metric.

    Args:
        target_dim: D, the size of one target.
    """

    name, metric, higher_is_better = "regression", "mse", False

    def __init__(self, target_dim: int = 1) -> None:
        self.target_dim = target_dim

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(prediction, target)

    def score(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(prediction.detach(), target)

    def outputs(self, ways: int) -> int:
        return self.target_dim

    def __repr__(self) -> str:
        return f"Regression(target_dim={self.target_dim})"


CLASSIFICATION = Classification()
