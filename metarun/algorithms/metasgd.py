"""Meta-SGD (Li, Zhou, Chen & Li, 2017): learn the initialisation and a per-element step size."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from metarun.algorithms.functional import param_key
from metarun.algorithms.maml import MAML
from metarun.tasktypes import CLASSIFICATION, TaskType
from metarun.types import Backbone


class MetaSGD(MAML):
    """MAML with a learned inner step size for every element of every parameter.

    The step sizes start at ``inner_lr``, are meta-parameters trained with the initialisation,
    and are used both in meta-training and at meta-test (so there is no ``test_inner_lr``).
    They are unconstrained, as in the paper: a step size may turn negative.

    Args:
        backbone: feature extractor with ``out_dim``.
        ways: classes per task.
        inner_lr: initial value of every step size.
        inner_steps: inner steps during meta-training (the paper: 1).
        test_inner_steps: inner steps at meta-test.
        first_order: drop second-order terms (step sizes still get gradients).
        bn_mode: see :class:`~metarun.algorithms.base.Algorithm`.
        head, vectorize, train_queries: see :class:`~metarun.algorithms.maml.MAML`.
        task_type: the data's task type (passed at run time).
    """

    def __init__(
        self,
        backbone: Backbone,
        ways: int,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        test_inner_steps: int = 1,
        first_order: bool = False,
        bn_mode: str = "batch",
        head: str = "learned",
        vectorize: bool = False,
        train_queries: int | None = None,
        checkpoint_inner: bool = False,
        task_type: TaskType = CLASSIFICATION,
    ) -> None:
        super().__init__(backbone, ways, inner_lr=inner_lr, inner_steps=inner_steps,
                         test_inner_steps=test_inner_steps, first_order=first_order,
                         bn_mode=bn_mode, head=head, vectorize=vectorize,
                         task_type=task_type, train_queries=train_queries,
                         checkpoint_inner=checkpoint_inner)
        self.step_sizes = nn.ParameterDict({
            param_key(name): nn.Parameter(torch.full_like(p, inner_lr))
            for name, p in self.net.named_parameters()
        })

    def _step_size(self, training: bool) -> Mapping[str, Tensor]:
        return {name: self.step_sizes[param_key(name)] for name, _ in self.net.named_parameters()}

