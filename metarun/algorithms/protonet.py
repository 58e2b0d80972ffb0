"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from metarun.algorithms.metric import MetricAlgorithm


def prototypes(embeddings: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Class means: ``[S, D]`` embeddings with labels ``[S]`` in ``0..ways-1`` to ``[ways, D]``."""
    onehot = F.one_hot(labels, ways).to(embeddings.dtype)  # [S, ways]
    return (onehot.T @ embeddings) / onehot.sum(0)[:, None]


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``[n, D]`` and ``[m, D]`` to squared Euclidean distances ``[n, m]``."""
    return (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)


class ProtoNet(MetricAlgorithm):
    """Classify a query by the nearest class mean (prototype) in embedding space.

    Logits are negative squared Euclidean distances to the prototypes; the backbone is the
    only meta-parameter. Works for any number of ways and shots at meta-test.

    Args:
        backbone: feature extractor.
        bn_mode: see :class:`~metarun.algorithms.base.Algorithm`.
        task_type: the data's task type (classification only).
    """

    def predict(self, support_z: Tensor, support_y: Tensor, query_z: Tensor,
                ways: int) -> Tensor:
        return -squared_distances(query_z, prototypes(support_z, support_y, ways))
