"""The shared shape of metric-based learners: embed, then compare queries with the support set.

Nothing adapts at meta-test: a prediction is a function of the support and query embeddings.
ProtoNet, Matching, Relation and Siamese networks and the black-box learner differ only in that
function (Relation Networks also in the loss, Siamese networks in what they train on), so the
episode loop and adaptation live here once.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from metarun.algorithms.base import Algorithm, positive_or_none
from metarun.tasktypes import CLASSIFICATION, TaskType
from metarun.types import (
    Backbone,
    Episode,
    EpisodeBatch,
    EpisodeData,
    StepOutput,
    TrainingData,
)


class MetricAlgorithm(Algorithm):
    """An embedding ``backbone`` plus a comparison of query and support embeddings.

    Works for any number of ways and shots at meta-test.

    Args:
        backbone: feature extractor with ``out_dim``.
        bn_mode: see :class:`~metarun.algorithms.base.Algorithm`.
        task_type: the data's task type (classification only).
        train_ways: meta-train on episodes of this many ways (``None``: the task's), as
            Prototypical Networks train 60-way for 5- and 20-way tests; meta-test keeps
            ``eval.ways``.
        train_queries: queries per class in those training episodes (``None``: the task's).
    """

    def __init__(self, backbone: Backbone, bn_mode: str = "running",
                 task_type: TaskType = CLASSIFICATION, train_ways: int | None = None,
                 train_queries: int | None = None) -> None:
        super().__init__(bn_mode=bn_mode, task_type=task_type, train_queries=train_queries)
        self.backbone = backbone
        self.train_ways = positive_or_none("train_ways", train_ways)

    def training_data(self, task: EpisodeData) -> TrainingData:
        """The task's episodes, with ``train_ways`` and ``train_queries`` where set."""
        return EpisodeData(self.train_ways or task.ways, task.shots,
                           self.train_queries or task.queries)

    @abstractmethod
    def predict(self, support_z: Tensor, support_y: Tensor, query_z: Tensor,
                ways: int) -> Tensor:
        """``[S, D]`` support and ``[Q, D]`` query embeddings to predictions ``[Q, ways]``."""

    def loss_and_score(self, prediction: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Training loss and metric of one task's predictions (default: the task type's)."""
        return self.task_type.loss_and_score(prediction, labels)

    def episode_loss(self, task: Episode, z: Tensor) -> tuple[Tensor, Tensor]:
        """Training loss and metric of one episode from ``z``, the embeddings of its support
        then query images (default: the queries' predictions against their labels)."""
        n_support = task.support_x.shape[0]
        prediction = self.predict(z[:n_support], task.support_y, z[n_support:], task.ways)
        return self.loss_and_score(prediction, task.query_y)

    def meta_train_step(self, batch: EpisodeBatch) -> StepOutput:
        losses, scores = [], []
        for task in batch:
            # One forward pass over support and query: one set of batch statistics per task.
            z = self.backbone(torch.cat([task.support_x, task.query_x]))
            loss, score = self.episode_loss(task, z)
            losses.append(loss)
            scores.append(score)
        metrics = {self.task_type.metric: float(torch.stack(scores).mean())}
        return StepOutput(torch.stack(losses).mean(), metrics)

    def evaluate(self, episode: Episode) -> tuple[float, float]:
        prediction = self.adapt(episode.support_x, episode.support_y)(episode.query_x)
        loss, score = self.loss_and_score(prediction, episode.query_y)
        return float(loss), float(score)

    def _adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        ways = int(support_y.max()) + 1
        with torch.no_grad():
            support_z = self.backbone(support_x)
        return lambda query_x: self.predict(support_z, support_y, self.backbone(query_x), ways)
