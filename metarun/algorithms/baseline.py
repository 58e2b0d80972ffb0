"""Fine-tuning baselines: Baseline and Baseline++ (Chen, Liu, Kira, Wang & Huang, ICLR 2019,
"A Closer Look at Few-shot Classification")."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.algorithms.base import Algorithm
from metarun.tasktypes import CLASSIFICATION, TaskType
from metarun.types import Backbone, EpisodeData, ImageData, LabelledBatch, StepOutput

HEADS = ("linear", "cosine")


def head_logits(z: Tensor, weight: Tensor, bias: Tensor | None, head: str,
                scale: float) -> Tensor:
    """``[B, D]`` features and a ``[classes, D]`` head to logits ``[B, classes]``.

    ``linear``: ``z W^T + b``. ``cosine`` (Baseline++): ``scale * cos(z, W_c)``, the scaled
    cosine similarity to each class's weight vector.
    """
    if head == "cosine":
        return scale * F.normalize(z, dim=-1) @ F.normalize(weight, dim=-1).T
    return F.linear(z, weight, bias)


class Baseline(Algorithm):
    """Pre-train a classifier over all training classes; at meta-test, freeze the body and fit
    a new head on each support set.

    Meta-training is ordinary supervised learning: ``batch_size`` images per task drawn from
    every image of the train split, labelled with their class among the ``train_classes``
    classes, cross-entropy through a ``head`` over all of them. To adapt, the frozen backbone
    embeds the support set once (no gradient reaches it) and a fresh head for the N classes
    is fitted by ``finetune_steps`` full-batch steps of SGD with momentum 0.9 and weight decay
    on the support embeddings. The new head starts deterministically (linear: zeros; cosine:
    the class means of the support embeddings), so meta-test results depend only on the
    episodes. Works for any number of ways and shots.

    Differences from the paper's protocol: full-batch steps from a deterministic start (the
    paper: 100 epochs of mini-batches of 4 from a random start).

    Args:
        backbone: feature extractor with ``out_dim``.
        train_classes: number of classes in the train split (passed at run time).
        head: ``"linear"`` (Baseline) or ``"cosine"`` (Baseline++).
        scale: the cosine head's logit scale (the paper's code: 2 for features of up to 200
            dimensions, else 10).
        batch_size: images per task in pre-training (``train.meta_batch`` tasks per step).
        finetune_steps: SGD steps fitting the new head at meta-test.
        finetune_lr: their learning rate.
        weight_decay: their L2 penalty on the head.
        bn_mode: see :class:`~metarun.algorithms.base.Algorithm`.
        task_type: the data's task type (classification only).
    """

    uses_train_classes = True

    def __init__(self, backbone: Backbone, train_classes: int, head: str = "linear",
                 scale: float = 2.0, batch_size: int = 64, finetune_steps: int = 100,
                 finetune_lr: float = 0.1, weight_decay: float = 1e-3,
                 bn_mode: str = "running", task_type: TaskType = CLASSIFICATION) -> None:
        super().__init__(bn_mode=bn_mode, task_type=task_type)
        if head not in HEADS:
            raise ValueError(f"algo.head must be one of {HEADS}; got {head!r}")
        if train_classes < 2:
            raise ValueError(f"the train split needs at least 2 classes; got {train_classes}")
        for key, value in (("algo.batch_size", batch_size),
                           ("algo.finetune_steps", finetune_steps)):
            if value < 1:
                raise ValueError(f"{key} must be at least 1; got {value}")
        if scale <= 0 or finetune_lr <= 0 or weight_decay < 0:
            raise ValueError("algo.scale and algo.finetune_lr must be positive and "
                             f"algo.weight_decay non-negative; got {scale}, {finetune_lr}, "
                             f"{weight_decay}")
        self.backbone = backbone
        self.head, self.scale = head, scale
        self.batch_size = batch_size
        self.finetune_steps, self.finetune_lr = finetune_steps, finetune_lr
        self.weight_decay = weight_decay
        self.classifier = nn.Linear(backbone.out_dim, train_classes, bias=head == "linear")

    def training_data(self, task: EpisodeData) -> ImageData:
        return ImageData(self.batch_size, self.classifier.out_features)

    def meta_train_step(self, batch: LabelledBatch) -> StepOutput:
        logits = head_logits(self.backbone(batch.x), self.classifier.weight,
                             self.classifier.bias, self.head, self.scale)
        loss, acc = self.task_type.loss_and_score(logits, batch.y)
        return StepOutput(loss, {self.task_type.metric: float(acc)})

    def fit_head(self, support_z: Tensor, support_y: Tensor,
                 ways: int) -> tuple[Tensor, Tensor | None]:
        """Fit a new ``ways``-class head on fixed support embeddings ``[S, D]``."""
        support_z = support_z.detach()
        onehot = F.one_hot(support_y, ways).to(support_z.dtype)
        if self.head == "cosine":
            start = (onehot.T @ support_z) / onehot.sum(0)[:, None]  # class means
            params = [start.clone().requires_grad_()]
        else:
            params = [support_z.new_zeros(ways, support_z.shape[1]).requires_grad_(),
                      support_z.new_zeros(ways).requires_grad_()]
        velocity = [torch.zeros_like(p) for p in params]
        with torch.enable_grad():
            for _ in range(self.finetune_steps):
                weight, bias = params[0], params[1] if len(params) > 1 else None
                logits = head_logits(support_z, weight, bias, self.head, self.scale)
                grads = torch.autograd.grad(F.cross_entropy(logits, support_y), params)
                with torch.no_grad():
                    for p, g, v in zip(params, grads, velocity, strict=True):
                        v.mul_(0.9).add_(g + self.weight_decay * p)
                        p.sub_(self.finetune_lr * v)
        weight = params[0].detach()
        return weight, (params[1].detach() if len(params) > 1 else None)

    def _adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        ways = int(support_y.max()) + 1
        with torch.no_grad():  # the body is frozen: nothing flows back into it
            support_z = self.backbone(support_x)
        weight, bias = self.fit_head(support_z, support_y, ways)
        return lambda query_x: head_logits(self.backbone(query_x), weight, bias, self.head,
                                           self.scale)
