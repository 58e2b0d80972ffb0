"""Siamese networks for one-shot recognition (Koch, Zemel & Salakhutdinov, ICML-DL 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.algorithms.metric import MetricAlgorithm
from metarun.tasktypes import CLASSIFICATION, TaskType
from metarun.types import (
    Backbone,
    Episode,
    EpisodeBatch,
    EpisodeData,
    PairBatch,
    PairData,
    StepOutput,
    TrainingData,
)


class Siamese(MetricAlgorithm):
    """Learn to verify "same class?" on image pairs; classify by the most similar support image.

    Meta-training minimises binary cross-entropy on verification pairs of the training
    classes, drawn one of two ways: ``pairs`` per task, ``same_fraction`` of them same-class
    (the paper's); or, with ``pairs=None``, every pair of images in each N-way training episode
    (``train_ways``, ``train_queries``), its same-class pairs weighted to ``same_fraction`` of
    the loss. The verification logit of two embeddings is a learned weighting of their
    component-wise L1 distance, ``w · |z1 - z2| + b`` (the paper's ``sigma(sum_j alpha_j
    |h1_j - h2_j|)`` before the sigmoid). At meta-test a query gets, for each class, the
    highest logit over that class's support images; the predicted class is the support image
    it is most likely to match. Works for any number of ways and shots. The training metric
    ``acc`` is pair verification accuracy (weighted as the loss); validation and test accuracy
    are N-way.

    Args:
        backbone: the twin feature extractor (shared weights) with ``out_dim``.
        pairs: verification pairs per task (``train.meta_batch`` tasks per step); ``None``:
            every pair of each training episode's images.
        same_fraction: fraction of same-class pairs (of the loss, with ``pairs=None``).
        bn_mode: see :class:`~metarun.algorithms.base.Algorithm`.
        task_type: the data's task type (classification only).
        train_ways: with ``pairs=None``, training episodes of this many ways (``None``: the
            task's).
        train_queries: with ``pairs=None``, queries per class in them (``None``: the task's).
    """

    def __init__(self, backbone: Backbone, pairs: int | None = 32, same_fraction: float = 0.5,
                 bn_mode: str = "running", task_type: TaskType = CLASSIFICATION,
                 train_ways: int | None = None, train_queries: int | None = None) -> None:
        super().__init__(backbone, bn_mode=bn_mode, task_type=task_type,
                         train_ways=train_ways, train_queries=train_queries)
        if pairs is not None and pairs < 1:
            raise ValueError(f"algo.pairs must be at least 1, or null; got {pairs}")
        if pairs is not None and (train_ways, train_queries) != (None, None):
            raise ValueError("algo.train_ways and algo.train_queries shape the training "
                             "episodes of algo.pairs=null; with algo.pairs set, Siamese "
                             "networks train on sampled pairs")
        if not 0.0 <= same_fraction <= 1.0:
            raise ValueError(f"algo.same_fraction must be in [0, 1]; got {same_fraction}")
        self.pairs, self.same_fraction = pairs, same_fraction
        self.verify = nn.Linear(backbone.out_dim, 1)

    def training_data(self, task: EpisodeData) -> TrainingData:
        if self.pairs is None:
            return super().training_data(task)
        return PairData(self.pairs, self.same_fraction)

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """Verification logits of every pair: ``[n, D]`` and ``[m, D]`` to ``[n, m]``."""
        return self.verify_logits(a[:, None, :], b[None, :, :])

    def verify_logits(self, a: Tensor, b: Tensor) -> Tensor:
        """Verification logits of embeddings ``a`` and ``b`` (broadcast; the last dimension is
        the embedding): ``w · |a - b| + b``."""
        return self.verify((a - b).abs()).squeeze(-1)

    def predict(self, support_z: Tensor, support_y: Tensor, query_z: Tensor,
                ways: int) -> Tensor:
        """Per class, the best verification logit over its support images: ``[Q, ways]``."""
        logits = self.similarity(query_z, support_z)  # [Q, S]
        member = F.one_hot(support_y, ways).T.bool()  # [ways, S]
        return logits[:, None, :].masked_fill(~member[None], float("-inf")).amax(-1)

    def meta_train_step(self, batch: PairBatch | EpisodeBatch) -> StepOutput:
        if isinstance(batch, EpisodeBatch):  # algo.pairs=null: see episode_loss
            return super().meta_train_step(batch)
        # One forward pass per group of algo.pairs pairs (a task's worth), as episodic learners
        # take one per task: one set of batch statistics each. On a CPU it is also faster:
        # Conv-4 on 28x28 took 27 ms for 64 images and 236 ms for 256 (channels-last, 2-core
        # AMD EPYC), its activations past the caches, so 4 groups of 32 pairs train 2x faster.
        parts = []
        for first, second in zip(batch.first.split(self.pairs), batch.second.split(self.pairs),
                                 strict=True):
            z = self.backbone(torch.cat([first, second]))
            parts.append(self.verify_logits(z[:len(first)], z[len(first):]))
        logits = torch.cat(parts)
        loss = F.binary_cross_entropy_with_logits(logits, batch.same)
        acc = ((logits > 0).to(batch.same.dtype) == batch.same).float().mean()
        return StepOutput(loss, {self.task_type.metric: float(acc)})

    def episode_loss(self, task: Episode, z: Tensor) -> tuple[Tensor, Tensor]:
        """Every pair of the episode's images (``algo.pairs=null``), from the one forward pass
        per episode: n images give n(n-1)/2 pairs for the cost of n embeddings, where sampled
        pairs give n/2."""
        y = torch.cat([task.support_y, task.query_y])
        first, second = torch.triu_indices(len(y), len(y), 1, device=y.device)
        logits = self.verify_logits(z[first], z[second])
        same = y[first] == y[second]
        # Few pairs are same-class (1 in 8 for 8 ways of 4 images): weighted so that they
        # make same_fraction of the loss, as in sampled pairs.
        weight = torch.where(same, self.same_fraction / same.sum().clamp(min=1),
                             (1 - self.same_fraction) / (~same).sum().clamp(min=1))
        bce = F.binary_cross_entropy_with_logits(logits, same.to(logits.dtype),
                                                 reduction="none")
        correct = ((logits > 0) == same).to(weight.dtype)
        return (weight * bce).sum(), (weight * correct).sum()
