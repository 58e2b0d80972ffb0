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
    the relation module reads the pair ``[class, query]`` and returns a relation score in
    ``[0, 1]``. Training regresses the scores onto the one-hot labels with mean squared error,
    as in the paper; the predicted class is the highest score. Works for any number of ways
    and shots at meta-test.

    Two relation modules: ``conv``, the paper's (:class:`ConvRelation`, on feature maps: the
    backbone must have a ``feature_shape``, as Conv-4 with ``pooled_blocks=2`` does), and
    ``mlp``, a two-layer perceptron on flat embeddings of any backbone
    (:class:`MLPRelation`).

    Args:
        backbone: feature extractor with ``out_dim`` (and ``feature_shape`` for ``conv``).
        hidden: width of the relation module's hidden (fully connected) layer; the paper's is
            8, after its two conv blocks.
        relation: ``conv`` or ``mlp``.
        bn_mode: see :class:`~metarun.algorithms.base.Algorithm`.
        task_type: the data's task type (classification only).
        train_ways, train_queries: the training episodes' shape
            (:class:`~metarun.algorithms.metric.MetricAlgorithm`).
    """

    def __init__(self, backbone: Backbone, hidden: int = 64, relation: str = "mlp",
                 bn_mode: str = "running", task_type: TaskType = CLASSIFICATION,
                 train_ways: int | None = None, train_queries: int | None = None) -> None:
        super().__init__(backbone, bn_mode=bn_mode, task_type=task_type, train_ways=train_ways,
                         train_queries=train_queries)
        if hidden < 1:
            raise ValueError(f"algo.hidden must be at least 1; got {hidden}")
        modules: dict[str, type[ConvRelation | MLPRelation]] = {"conv": ConvRelation,
                                                                "mlp": MLPRelation}
        if relation not in modules:
            raise ValueError(f"algo.relation must be one of {', '.join(modules)}; "
                             f"got {relation!r}")
        self.relation = modules[relation](backbone, hidden)

    def predict(self, support_z: Tensor, support_y: Tensor, query_z: Tensor,
                ways: int) -> Tensor:
        """Relation scores ``[Q, ways]`` in ``[0, 1]``."""
        classes = F.one_hot(support_y, ways).to(support_z.dtype).T @ support_z  # [ways, D]
        return self.relation(classes, query_z)

    def loss_and_score(self, prediction: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """MSE against the one-hot labels (the paper's loss) and accuracy."""
        target = F.one_hot(labels, prediction.shape[-1]).to(prediction.dtype)
        return F.mse_loss(prediction, target), self.task_type.score(prediction, labels)


class MLPRelation(nn.Sequential):
    """``[class, query]`` concatenated, then linear, batch norm, ReLU, linear, sigmoid.

    Batch norm before the ReLU, as in every layer of the paper's relation module: without it
    a narrow hidden layer on non-negative embeddings can start all dead (constant scores).
    (A ``Sequential``, so that its parameters keep the names of earlier checkpoints.)
    """

    def __init__(self, backbone: Backbone, hidden: int) -> None:
        dim = backbone.out_dim
        super().__init__(nn.Linear(2 * dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, classes: Tensor, queries: Tensor) -> Tensor:  # type: ignore[override]
        """``[ways, D]`` class and ``[Q, D]`` query embeddings to scores ``[Q, ways]``."""
        (ways, d), q = classes.shape, queries.shape[0]
        pairs = torch.cat([classes[None].expand(q, ways, d), queries[:, None].expand(q, ways, d)],
                          dim=-1)
        return super().forward(pairs.reshape(q * ways, 2 * d)).view(q, ways)


class ConvRelation(nn.Module):
    """The paper's relation module: on the class and query feature maps concatenated along
    the channels, two blocks of [3x3 conv, batch norm, ReLU, 2x2 max-pool], then a ReLU
    layer of ``hidden`` units and a sigmoid output.

    The first convolution is computed as two, one per half of its input channels, on the
    ``ways`` class maps and the ``Q`` query maps, and summed per pair: a convolution is linear
    in its input, so this equals convolving each of the ``ways * Q`` concatenated pairs, at
    ``ways + Q`` maps' cost (the pairs would make it the most expensive layer of a step).
    """

    def __init__(self, backbone: Backbone, hidden: int) -> None:
        super().__init__()
        feature_shape = backbone.feature_shape
        if feature_shape is None:
            raise ValueError(
                "algo.relation=conv convolves feature maps, and this backbone's embedding is "
                "pooled: use backbone=conv4 (with backbone.pooled_blocks=2, as the paper) or "
                "algo.relation=mlp")
        channels, height, width = feature_shape
        if min(height, width) < 4:
            raise ValueError(
                f"algo.relation=conv pools the feature map twice, so it must be at least 4x4; "
                f"the backbone's is {height}x{width} (backbone.pooled_blocks=2 keeps Conv-4's "
                f"7x7 on 28x28 images)")
        self.feature_shape = feature_shape
        self.first = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.rest = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(channels * (height // 4) * (width // 4), hidden), nn.ReLU(),
            nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, classes: Tensor, queries: Tensor) -> Tensor:
        """``[ways, C*H*W]`` class and ``[Q, C*H*W]`` query embeddings to ``[Q, ways]``."""
        channels = self.feature_shape[0]
        weight = self.first.weight
        by_class = F.conv2d(classes.reshape(-1, *self.feature_shape), weight[:, :channels],
                            self.first.bias, padding=1)
        by_query = F.conv2d(queries.reshape(-1, *self.feature_shape), weight[:, channels:],
                            padding=1)
        pairs = by_query[:, None] + by_class[None]  # [Q, ways, C, H, W]
        q, ways = pairs.shape[:2]
        return self.rest(pairs.flatten(0, 1)).view(q, ways)
