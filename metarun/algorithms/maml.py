"""Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017), second or first order."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from metarun.algorithms.base import Algorithm
from metarun.algorithms.functional import (
    Params,
    StepSize,
    StepState,
    forward,
    inner_trajectory,
)
from metarun.tasktypes import CLASSIFICATION, Classification, Regression, TaskType
from metarun.types import Backbone, EpisodeBatch, StepOutput

HEADS = ("learned", "zero", "zero_init")


class MAML(Algorithm):
    """MAML over a backbone plus a linear head.

    Meta-training adapts a copy of all weights to each task's support set with
    ``inner_steps`` steps of size ``inner_lr`` and differentiates the query loss through that
    adaptation (second order unless ``first_order``). Meta-testing adapts with
    ``test_inner_steps`` steps of size ``test_inner_lr``. The head has ``ways`` outputs for
    classification and the target size for regression (the data's task type decides).

    Args:
        backbone: feature extractor with an ``out_dim`` attribute.
        ways: classes per task (the head's width for classification).
        inner_lr: inner step size during meta-training (alpha).
        inner_steps: inner steps during meta-training.
        test_inner_lr: inner step size at meta-test (default: ``inner_lr``).
        test_inner_steps: inner steps at meta-test.
        first_order: drop second-order terms of the meta-gradient (FOMAML).
        first_order_steps: first order for the first this many meta-updates, second order
            after: derivative-order annealing (Antoniou et al.'s "DA"). A first-order step of
            the Omniglot recipe takes about 0.6 of a second-order one's time.
        bn_mode: see :class:`~metarun.algorithms.base.Algorithm`.
        head: where each task's inner loop starts the linear head. ``"learned"``: from
            meta-learned weights (the paper). ``"zero"``: from zeros, every task (the
            "zeroing trick" of Kao et al., ICLR 2022): no class is favoured before the
            support set is seen, and the head's first inner step makes it a prototype-like
            classifier (measured in ``docs/algorithms.md``). ``"zero_init"``: meta-learned,
            starting at zeros.
        vectorize: run the tasks of a meta-batch together under ``torch.func.vmap`` instead
            of a Python loop. Same meta-gradient; batch norm must use batch statistics
            (``bn_mode="batch"``), since running statistics cannot be updated per task.
        task_type: the data's task type (passed at run time).
        train_queries: queries per class in meta-training episodes (``None``: the task's);
            see :class:`~metarun.algorithms.base.Algorithm`.
        checkpoint_inner: recompute each inner step in the backward pass instead of keeping
            its activations (:func:`~metarun.algorithms.functional.inner_trajectory`): the
            same meta-gradient, for less memory and more time. Looped tasks only.
    """

    task_types = (Classification, Regression)

    def __init__(
        self,
        backbone: Backbone,
        ways: int,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        test_inner_lr: float | None = None,
        test_inner_steps: int = 3,
        first_order: bool = False,
        bn_mode: str = "batch",
        head: str = "learned",
        vectorize: bool = False,
        task_type: TaskType = CLASSIFICATION,
        train_queries: int | None = None,
        checkpoint_inner: bool = False,
        first_order_steps: int = 0,
    ) -> None:
        super().__init__(bn_mode=bn_mode, task_type=task_type, train_queries=train_queries)
        if task_type.has_classes and ways < 2:
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
        if head not in HEADS:
            raise ValueError(f"algo.head must be one of {HEADS}; got {head!r}")
        if isinstance(first_order_steps, bool) or first_order_steps < 0:
            raise ValueError(f"algo.first_order_steps must be a non-negative integer; got "
                             f"{first_order_steps!r}")
        self.ways = ways
        out_dim = backbone.out_dim
        self.net = nn.Sequential(backbone, nn.Linear(out_dim, task_type.outputs(ways)))
        self.head = head
        if head != "learned":
            for p in self.net[1].parameters():
                nn.init.zeros_(p)
        self.inner_lr, self.inner_steps = float(inner_lr), int(inner_steps)
        self.test_inner_lr = float(inner_lr if test_inner_lr is None else test_inner_lr)
        self.test_inner_steps = int(test_inner_steps)
        self.first_order = first_order
        self.first_order_steps, self.steps_done = int(first_order_steps), 0
        self.vectorize = vectorize
        self.checkpoint_inner = checkpoint_inner
        if vectorize and checkpoint_inner:
            raise ValueError("algo.checkpoint_inner=true needs algo.vectorize=false: "
                             "torch.utils.checkpoint does not run under torch.func.vmap")
        if vectorize and bn_mode == "running" and self.norms():
            raise ValueError(
                "algo.vectorize=true needs algo.bn_mode=batch: batch-norm running statistics "
                "cannot be updated per task under vmap"
            )

    def check_task(self, ways: int) -> None:
        if self.task_type.has_classes and ways != self.ways:
            raise ValueError(
                f"{type(self).__name__}'s head is {self.ways}-way, so it can only be evaluated "
                f"on {self.ways}-way tasks; got {ways}-way"
            )

    # -- what the family's variants change ------------------------------------------------

    def _learner(self) -> nn.Module:
        """The module whose parameters the inner loop adapts (MAML: all of them)."""
        return self.net

    def _adapted(self, learner: nn.Module) -> Params:
        """The learner's parameters the inner loop adapts (MAML: all of them)."""
        return dict(learner.named_parameters())

    def _start(self, learner: nn.Module) -> Params:
        """Where the inner loop starts: the adapted parameters, the head zeroed if asked."""
        params = self._adapted(learner)
        if self.head != "zero":
            return params
        # Zeros still in the graph (autograd.grad needs its inputs there, even under no_grad,
        # and vmap forbids requires_grad_): the head's Parameters get zero gradients.
        head = {id(p) for p in self.net[1].parameters()}
        with torch.enable_grad():
            return {k: v * 0 if id(v) in head else v for k, v in params.items()}

    def _features(self, x: Tensor) -> Tensor:
        """The learner's input, computed with meta-parameters only (MAML: the inputs)."""
        return x

    def _step_size(self, training: bool) -> StepSize | Callable[[int], StepSize]:
        """Inner step size: a number, a tensor per learner parameter, or either per step."""
        return self.inner_lr if training else self.test_inner_lr

    def _state(self) -> StepState | None:
        """Per-step tensors of the learner that are not adapted (MAML: none)."""
        return None

    def scheduled(self, step: int) -> None:
        self.steps_done = step - 1

    def _create_graph(self) -> bool:
        """Whether meta-training keeps second-order terms now."""
        return not self.first_order and self.steps_done >= self.first_order_steps

    @property
    def second_order(self) -> bool:
        return not self.first_order

    def _query_loss(self, learner: nn.Module, trajectory: list[Params], query_x: Tensor,
                    query_y: Tensor) -> tuple[Tensor, Tensor]:
        """Meta-training loss and metric of one task from its inner-loop trajectory."""
        prediction = forward(learner, trajectory[-1], query_x,
                             _after(self._state(), len(trajectory) - 1))
        return self.task_type.loss_and_score(prediction, query_y)

    # -- the algorithm ----------------------------------------------------------------------

    def task_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                  query_y: Tensor, functional: bool = False) -> tuple[Tensor, Tensor]:
        """Adapt to one task's support set; return the query loss and metric.

        With ``functional`` the inner gradients come from ``torch.func.grad``, so this can run
        under ``torch.func.vmap``.
        """
        learner = self._learner()
        trajectory = inner_trajectory(
            learner, self._start(learner), self._features(support_x), support_y,
            self.task_type.loss, steps=self.inner_steps, lr=self._step_size(True),
            create_graph=self._create_graph(), state=self._state(), functional=functional,
            checkpoint=self.checkpoint_inner,
        )
        return self._query_loss(learner, trajectory, self._features(query_x), query_y)

    def meta_train_step(self, batch: EpisodeBatch) -> StepOutput:
        if self.vectorize:
            losses, scores = self.vmap_tasks(
                lambda sx, sy, qx, qy: self.task_loss(sx, sy, qx, qy, functional=True),
                batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        else:
            pairs = [self.task_loss(t.support_x, t.support_y, t.query_x, t.query_y)
                     for t in batch]
            losses = torch.stack([loss for loss, _ in pairs])
            scores = torch.stack([score for _, score in pairs])
        return StepOutput(losses.mean(), {self.task_type.metric: float(scores.mean())})

    def _adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        self.check_labels(support_y)
        learner = self._learner()
        params = {k: v.detach().requires_grad_() for k, v in self._start(learner).items()}
        with torch.no_grad():
            features = self._features(support_x)
        trajectory = inner_trajectory(
            learner, params, features, support_y, self.task_type.loss,
            steps=self.test_inner_steps, lr=self._step_size(False), create_graph=False,
            state=self._state(),
        )
        fast = {k: v.detach() for k, v in trajectory[-1].items()}
        state = _after(self._state(), len(trajectory) - 1)
        return lambda query_x: forward(learner, fast, self._features(query_x), state)


def _after(state: StepState | None, steps: int) -> Mapping[str, Tensor] | None:
    """The per-step tensors a prediction uses after ``steps`` inner steps (those of the last)."""
    return None if state is None else state(max(steps - 1, 0))

