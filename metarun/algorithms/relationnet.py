"""Relation Network (Sung, Yang, Zhang, Xiang, Torr & Hospedales, CVPR 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.algorithms.metric import MetricAlgorithm
from metarun.tasktypes import CLASSIFICATION, TaskType
from metarun.types import Backbone


class RelationNet(MetricAlgorithm):
    """Score each (query, class) pair with a learned relation module.

    A class is represented by the sum of its support embeddings (the paper's K-shot rule);
    the relation module reads the concatenation ``[class, query]`` and returns a relation
    score in ``[0, 1]``. Training regresses the scores onto the one-hot labels with mean
    squared error, as in the paper; the predicted class is the highest score. Works for any
    number of ways and shots at meta-test.

    Difference from the paper: the relation module is a two-layer perceptron on the backbone's
    flat embeddings (the paper's applies two conv blocks to feature maps before its two
    fully connected layers).

    Args:
        backbone: feature extractor with ``out_dim``.
        hidden: width of the relation module's hidden layer (the paper's 8 follows two
            conv blocks; on the flat embeddings 8 is a bottleneck).
        bn_mode: see :class:`~metarun.algorithms.base.Algorithm`.
        task_type: the data's task type (classification only).
        train_ways, train_queries: the training episodes' shape
            (:class:`~metarun.algorithms.metric.MetricAlgorithm`).
    """

    def __init__(self, backbone: Backbone, hidden: int = 64, bn_mode: str = "running",
                 task_type: TaskType = CLASSIFICATION, train_ways: int | None = None,
                 train_queries: int | None = None) -> None:
        super().__init__(backbone, bn_mode=bn_mode, task_type=task_type, train_ways=train_ways,
                         train_queries=train_queries)
        if hidden < 1:
            raise ValueError(f"algo.hidden must be at least 1; got {hidden}")
        dim = backbone.out_dim
        # Batch norm before the ReLU, as in every layer of the paper's relation module: without
        # it the 8 hidden units on non-negative embeddings can all start dead (constant scores).
        self.relation = nn.Sequential(nn.Linear(2 * dim, hidden), nn.BatchNorm1d(hidden),
                                      nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid())

    def predict(self, support_z: Tensor, support_y: Tensor, query_z: Tensor,
                ways: int) -> Tensor:
        """Relation scores ``[Q, ways]`` in ``[0, 1]``."""
        classes = F.one_hot(support_y, ways).to(support_z.dtype).T @ support_z  # [ways, D]
        q, d = query_z.shape
        pairs = torch.cat([classes[None].expand(q, ways, d), query_z[:, None].expand(q, ways, d)],
                          dim=-1)
        return self.relation(pairs.reshape(q * ways, 2 * d)).view(q, ways)

    def loss_and_score(self, prediction: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """MSE against the one-hot labels (the paper's loss) and accuracy."""
        target = F.one_hot(labels, prediction.shape[-1]).to(prediction.dtype)
        return F.mse_loss(prediction, target), self.task_type.score(prediction, labels)
