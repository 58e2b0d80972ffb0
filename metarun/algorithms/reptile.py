"""Reptile (Nichol, Achiam & Schulman, 2018): move the initialisation toward adapted weights."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import functional_call

from metarun.algorithms.functional import AdamDirections, inner_trajectory
from metarun.algorithms.maml import MAML
from metarun.tasktypes import CLASSIFICATION, TaskType
from metarun.types import Backbone, EpisodeBatch, StepOutput

INNER_OPTIMIZERS = ("sgd", "adam")


class Reptile(MAML):
    """Train a copy of the weights on each task, then pull the initialisation toward it.

    For each task, ``inner_steps`` full-batch steps of SGD or Adam (Adam with
    ``beta1 = 0``, as in the paper) on all of the task's labelled images (support and query)
    give adapted weights ``phi``. The meta-loss is ``mean over tasks of 0.5 * ||theta - phi||^2``,
    whose gradient is ``theta - mean(phi)``: one step of plain SGD with learning
    rate ``epsilon`` (``optim=sgd optim.lr=epsilon optim.momentum=0``) is exactly the batched
    Reptile update ``theta <- theta + epsilon * (mean(phi) - theta)``; ``train.meta_batch=1``
    is serial Reptile. Another meta-optimizer (Adam) treats ``theta - mean(phi)`` as a gradient.
    No second-order terms. Meta-test fine-tunes on the support set the same way, with
    ``test_inner_steps`` steps of size ``test_inner_lr``.

    The logged training loss is that mean distance; the logged metric (accuracy or MSE) is the
    adapted weights' on the task's own examples. Classification and regression alike.

    Args:
        backbone: feature extractor with ``out_dim``.
        ways: classes per task.
        inner_lr: inner step size during meta-training.
        inner_steps: inner steps per task during meta-training.
        inner_optimizer: ``"sgd"`` or ``"adam"``.
        test_inner_lr: inner step size at meta-test (default: ``inner_lr``).
        test_inner_steps: inner steps at meta-test.
        bn_mode: see :class:`~metarun.algorithms.base.Algorithm`.
        vectorize: fine-tune the tasks of a meta-batch together under ``torch.func.vmap``
            (see :class:`~metarun.algorithms.maml.MAML`): the same update.
        task_type: the data's task type (passed at run time).
    """

    def __init__(
        self,
        backbone: Backbone,
        ways: int,
        inner_lr: float = 0.001,
        inner_steps: int = 5,
        inner_optimizer: str = "adam",
        test_inner_lr: float | None = None,
        test_inner_steps: int = 50,
        bn_mode: str = "batch",
        vectorize: bool = False,
        task_type: TaskType = CLASSIFICATION,
    ) -> None:
        super().__init__(backbone, ways, inner_lr=inner_lr, inner_steps=inner_steps,
                         test_inner_lr=test_inner_lr, test_inner_steps=test_inner_steps,
                         first_order=True, bn_mode=bn_mode, vectorize=vectorize,
                         task_type=task_type)
        if inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(
                f"algo.inner_optimizer must be one of {INNER_OPTIMIZERS}; got {inner_optimizer!r}"
            )
        self.inner_optimizer = inner_optimizer

    def fine_tune(self, x: Tensor, y: Tensor, steps: int, lr: float,
                  functional: bool = False) -> dict[str, Tensor]:
        """Weights after ``steps`` full-batch steps on ``(x, y)``, starting from the current ones:
        the shared inner loop, first order, with Adam's directions (``beta1 = 0``) or the
        gradients' (``functional``: as under ``torch.func.vmap``).

        Returns detached tensors; the module's own parameters are not changed.
        """
        start = {n: p.detach() if functional else p.detach().requires_grad_()
                 for n, p in self.net.named_parameters()}
        trajectory = inner_trajectory(
            self.net, start, x, y, self.task_type.loss, steps=steps, lr=lr, create_graph=False,
            functional=functional,
            directions=AdamDirections() if self.inner_optimizer == "adam" else None)
        return {n: w.detach() for n, w in trajectory[-1].items()}

    def _fine_tuned(self, x: Tensor, y: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """One task's adapted weights and their metric on its own examples."""
        phi = self.fine_tune(x, y, self.inner_steps, self.inner_lr, functional=self.vectorize)
        with torch.no_grad():
            return phi, self.task_type.score(functional_call(self.net, phi, (x,)), y)

    def meta_train_step(self, batch: EpisodeBatch) -> StepOutput:
        x = torch.cat([batch.support_x, batch.query_x], 1)  # each task's labelled examples
        y = torch.cat([batch.support_y, batch.query_y], 1)
        if self.vectorize:
            phi, scores = self.vmap_tasks(self._fine_tuned, x, y)
        else:
            tasks = [self._fine_tuned(*task) for task in zip(x, y, strict=True)]
            phi = {n: torch.stack([w[n] for w, _ in tasks]) for n in tasks[0][0]}
            scores = torch.stack([score for _, score in tasks])
        # The mean over tasks of each task's distance, whose gradient is theta - mean(phi):
        # its value, unlike the distance to mean(phi), is a mean of per-task terms, so a
        # data-parallel run's mean of its ranks' equal shares logs the one-process value.
        loss = torch.stack([0.5 * (p - phi[n]).pow(2).sum() / len(scores)
                            for n, p in self.net.named_parameters()]).sum()
        return StepOutput(loss, {self.task_type.metric: float(scores.mean())})

    def _adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        self.check_labels(support_y)
        phi = self.fine_tune(support_x, support_y, self.test_inner_steps, self.test_inner_lr)
        return lambda query_x: functional_call(self.net, phi, (query_x,))
