"""Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017), second or first order."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metarun.algorithms.base import Algorithm, classification_loss
from metarun.algorithms.functional import inner_loop
from metarun.types import EpisodeBatch, StepOutput


class MAML(Algorithm):
    """MAML over a backbone plus a linear ``ways``-way head.

    Meta-training adapts a copy of all weights to each task's support set with
    ``inner_steps`` steps of size ``inner_lr`` and differentiates the query loss through that
    adaptation (second order unless ``first_order``). Meta-testing adapts with
    ``test_inner_steps`` steps of size ``test_inner_lr``.

    Args:
        backbone: feature extractor with an ``out_dim`` attribute.
        ways: classes per task (the head's width).
        inner_lr: inner step size during meta-training (alpha).
        inner_steps: inner steps during meta-training.
        test_inner_lr: inner step size at meta-test (default: ``inner_lr``).
        test_inner_steps: inner steps at meta-test.
        first_order: drop second-order terms of the meta-gradient (FOMAML).
        bn_mode: see :class:`~metarun.algorithms.base.Algorithm`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        ways: int,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        test_inner_lr: float | None = None,
        test_inner_steps: int = 3,
        first_order: bool = False,
        bn_mode: str = "batch",
    ) -> None:
        super().__init__(bn_mode=bn_mode)
        if ways < 2:
            raise ValueError(f"algo.ways must be at least 2; got {ways}")
        if inner_lr <= 0 or (test_inner_lr is not None and test_inner_lr <= 0):
            raise ValueError(
                f"algo.inner_lr and algo.test_inner_lr must be positive; got {inner_lr}, "
                f"{test_inner_lr}"
            )
        if inner_steps < 1 or test_inner_steps < 0:
            raise ValueError(
                "algo.inner_steps must be at least 1 and algo.test_inner_steps at least 0; "
                f"got {inner_steps}, {test_inner_steps}"
            )
        self.ways = ways
        out_dim: int = backbone.out_dim  # type: ignore[assignment]
        self.net = nn.Sequential(backbone, nn.Linear(out_dim, ways))
        self.inner_lr, self.inner_steps = float(inner_lr), int(inner_steps)
        self.test_inner_lr = float(inner_lr if test_inner_lr is None else test_inner_lr)
        self.test_inner_steps = int(test_inner_steps)
        self.first_order = first_order

    def check_task(self, ways: int) -> None:
        if ways != self.ways:
            raise ValueError(
                f"{type(self).__name__}'s head is {self.ways}-way, so it can only be evaluated "
                f"on {self.ways}-way tasks; got {ways}-way"
            )

    # -- what the family's variants change ------------------------------------------------

    def _learner(self) -> nn.Module:
        """The module whose parameters the inner loop adapts (MAML: all of them)."""
        return self.net

    def _features(self, x: Tensor) -> Tensor:
        """The learner's input, computed with meta-parameters only (MAML: the images)."""
        return x

    def _step_size(self, training: bool) -> float | Mapping[str, Tensor]:
        """Inner step size: a number, or a tensor per learner parameter."""
        return self.inner_lr if training else self.test_inner_lr

    # -- the algorithm ----------------------------------------------------------------------

    def meta_train_step(self, batch: EpisodeBatch) -> StepOutput:
        learner = self._learner()
        params = dict(learner.named_parameters())
        losses, accs = [], []
        for task in batch:
            fast = inner_loop(
                learner, params, self._features(task.support_x), task.support_y,
                F.cross_entropy, steps=self.inner_steps, lr=self._step_size(True),
                create_graph=not self.first_order,
            )
            logits = functional_call(learner, fast, (self._features(task.query_x),))
            loss, acc = classification_loss(logits, task.query_y)
            losses.append(loss)
            accs.append(acc)
        return StepOutput(torch.stack(losses).mean(), {"acc": float(torch.stack(accs).mean())})

    def _adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        self.check_task(int(support_y.max()) + 1)
        learner = self._learner()
        params = {k: v.detach().requires_grad_() for k, v in learner.named_parameters()}
        with torch.no_grad():
            features = self._features(support_x)
        fast = inner_loop(
            learner, params, features, support_y, F.cross_entropy,
            steps=self.test_inner_steps, lr=self._step_size(False), create_graph=False,
        )
        fast = {k: v.detach() for k, v in fast.items()}
        return lambda query_x: functional_call(learner, fast, (self._features(query_x),))
