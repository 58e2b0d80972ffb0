"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.algorithms.base import Algorithm
from metarun.tasktypes import CLASSIFICATION, TaskType
from metarun.types import EpisodeBatch, StepOutput


def prototypes(embeddings: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Class means: ``[S, D]`` embeddings with labels ``[S]`` in ``0..ways-1`` to ``[ways, D]``."""
    onehot = F.one_hot(labels, ways).to(embeddings.dtype)  # [S, ways]
    return (onehot.T @ embeddings) / onehot.sum(0)[:, None]


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``[n, D]`` and ``[m, D]`` to squared Euclidean distances ``[n, m]``."""
    return (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)


class ProtoNet(Algorithm):
    """Classify a query by the nearest class mean (prototype) in embedding space.

    Logits are negative squared Euclidean distances to the prototypes; the backbone is the
    only meta-parameter. Works for any number of ways and shots at meta-test.

    Args:
        backbone: feature extractor.
        bn_mode: see :class:`~metarun.algorithms.base.Algorithm`.
        task_type: the data's task type (classification only).
    """

    def __init__(self, backbone: nn.Module, bn_mode: str = "running",
                 task_type: TaskType = CLASSIFICATION) -> None:
        super().__init__(bn_mode=bn_mode, task_type=task_type)
        self.backbone = backbone

    def meta_train_step(self, batch: EpisodeBatch) -> StepOutput:
        losses, accs = [], []
        for task in batch:
            n_support = task.support_x.shape[0]
            # One forward pass over support and query: one set of batch statistics per task.
            z = self.backbone(torch.cat([task.support_x, task.query_x]))
            protos = prototypes(z[:n_support], task.support_y, task.ways)
            loss, acc = self.task_type.loss_and_score(
                -squared_distances(z[n_support:], protos), task.query_y)
            losses.append(loss)
            accs.append(acc)
        metrics = {self.task_type.metric: float(torch.stack(accs).mean())}
        return StepOutput(torch.stack(losses).mean(), metrics)

    def _adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        with torch.no_grad():
            protos = prototypes(self.backbone(support_x), support_y, int(support_y.max()) + 1)
        return lambda query_x: -squared_distances(self.backbone(query_x), protos)
