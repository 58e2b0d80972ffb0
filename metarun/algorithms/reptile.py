"""Reptile (Nichol, Achiam & Schulman, 2018): move the initialisation toward adapted weights."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metarun.algorithms.functional import AdamDirections, Directions, inner_trajectory
from metarun.algorithms.maml import MAML
from metarun.tasktypes import CLASSIFICATION, TaskType
from metarun.types import Backbone, EpisodeBatch, StepOutput

INNER_OPTIMIZERS = ("sgd", "adam")


class CarriedAdam(nn.Module):
    """The inner Adam's state (the running mean of squared gradients of each weight, and the
    steps taken) carried from task to task, as the reference Reptile keeps one Adam optimizer
    for the whole run. Buffers, so checkpoints, exact resume and the ranks' averaging of
    buffers include it."""

    def __init__(self, params: dict[str, Tensor]) -> None:
        super().__init__()
        self.names = list(params)
        for name, p in params.items():
            self.register_buffer(self._key(name), torch.zeros_like(p.detach()))
        self.steps: Tensor
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @staticmethod
    def _key(name: str) -> str:
        return "v__" + name.replace(".", "__")  # a buffer's name cannot hold a dot

    def directions(self) -> AdamDirections:
        """Adam's directions starting from the carried state (which they leave alone)."""
        v = {n: getattr(self, self._key(n)) for n in self.names}  # zeros: a fresh Adam's
        return AdamDirections(v=v, steps=int(self.steps))

    @torch.no_grad()
    def keep(self, directions: AdamDirections) -> None:
        """Carry on from where ``directions`` left off."""
        for n in self.names:
            getattr(self, self._key(n)).copy_(directions.v[n])
        self.steps.fill_(directions.steps)


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

    Each task's inner Adam starts afresh unless ``carry_adam_state``: then, as in the paper's
    code (one TensorFlow Adam for the whole run, whose slots Reptile never resets), the
    running mean of squared gradients and the step count carry from task to task through
    meta-training (the tasks of a meta-batch in order), and every meta-test episode starts
    from the state training left. A fresh Adam's first step is ``lr * sign(gradient)`` for
    every weight, however small its gradient; a carried one scales each weight's step by its
    gradients' history.

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
        carry_adam_state: carry the inner Adam's state from task to task (above); not with
            ``vectorize``, whose tasks run together, nor with the ``sgd`` inner optimizer.
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
        carry_adam_state: bool = False,
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
        if carry_adam_state and (vectorize or inner_optimizer != "adam"):
            raise ValueError("algo.carry_adam_state carries an Adam state from task to task in "
                             "order: it needs algo.inner_optimizer=adam and algo.vectorize=false")
        self.carried = (CarriedAdam(dict(self.net.named_parameters())) if carry_adam_state
                        else None)

    def directions(self) -> Directions | None:
        """A new inner loop's step directions: Adam's (fresh, or from the carried state), or
        the gradients' (``None``)."""
        if self.inner_optimizer != "adam":
            return None
        return self.carried.directions() if self.carried is not None else AdamDirections()

    def fine_tune(self, x: Tensor, y: Tensor, steps: int, lr: float,
                  functional: bool = False,
                  directions: Directions | None = None) -> dict[str, Tensor]:
        """Weights after ``steps`` full-batch steps on ``(x, y)``, starting from the current ones:
        the shared inner loop, first order, along ``directions`` (default:
        :meth:`directions`'s), taking gradients as under ``torch.func.vmap`` if ``functional``.

        Returns detached tensors; the module's own parameters are not changed.
        """
        start = {n: p.detach() if functional else p.detach().requires_grad_()
                 for n, p in self.net.named_parameters()}
        trajectory = inner_trajectory(
            self.net, start, x, y, self.task_type.loss, steps=steps, lr=lr, create_graph=False,
            functional=functional, directions=directions or self.directions())
        return {n: w.detach() for n, w in trajectory[-1].items()}

    def _fine_tuned(self, x: Tensor, y: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """One task's adapted weights and their metric on its own examples; a carried Adam
        state moves on to where this task left it."""
        directions = self.directions()
        phi = self.fine_tune(x, y, self.inner_steps, self.inner_lr, functional=self.vectorize,
                             directions=directions)
        if self.carried is not None and isinstance(directions, AdamDirections):
            self.carried.keep(directions)
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
