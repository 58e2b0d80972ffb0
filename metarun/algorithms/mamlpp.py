"""MAML++ (Antoniou, Edwards & Storkey, "How to train your MAML", ICLR 2019).

Each of the paper's fixes to MAML is its own switch, so that an ablation is a sweep
(``metarun -m algo=mamlpp algo.multi_step_loss=true,false``). The fifth, cosine annealing of
the meta learning rate, belongs to the trainer: ``train.lr_schedule=cosine``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from metarun.algorithms.functional import Params, StepSize, StepState, forward, param_key
from metarun.algorithms.maml import MAML
from metarun.tasktypes import CLASSIFICATION, TaskType
from metarun.types import Backbone


def msl_weights(steps: int, epoch: int, msl_epochs: int) -> Tensor:
    """Per-step weights of the multi-step loss at ``epoch`` (the paper's schedule).

    They start uniform (``1/steps`` each); over ``msl_epochs`` epochs every non-final weight
    decays linearly to ``0.03/steps`` while the final one grows by as much, so they always sum
    to 1. From epoch ``msl_epochs`` on only the final step counts (``[0, ..., 0, 1]``).

    Returns:
        ``[steps]`` float64 weights.
    """
    if epoch >= msl_epochs:
        return torch.nn.functional.one_hot(torch.tensor(steps - 1), steps).double()
    decay = epoch / (steps * msl_epochs)
    floor = 0.03 / steps
    weights = torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    weights[:-1] = (weights[:-1] - decay).clamp(min=floor)
    weights[-1] = min(1.0 / steps + (steps - 1) * decay, 1.0 - (steps - 1) * floor)
    return weights


class MAMLpp(MAML):
    """MAML with the five fixes of MAML++, each behind a switch.

    An *epoch* is ``epoch_steps`` meta-updates (the paper: 500); the trainer reports progress
    through :meth:`scheduled`.

    Args:
        backbone: feature extractor with ``out_dim``.
        ways: classes per task.
        inner_lr: inner step size, and the initial value of the learned ones.
        inner_steps: inner steps in meta-training (the paper: 5).
        test_inner_steps: inner steps at meta-test. Per-step quantities (learned step sizes,
            batch-norm weights and statistics) exist for the ``inner_steps`` training steps;
            further test steps reuse the last step's.
        first_order: always first order (overrides ``first_order_epochs``).
        bn_mode: see :class:`~metarun.algorithms.base.Algorithm`.
        head, vectorize, train_queries: see :class:`~metarun.algorithms.maml.MAML`.
        multi_step_loss: MSL, the query loss after every inner step with annealed weights
            (:func:`msl_weights`), for the first ``msl_epochs`` epochs.
        msl_epochs: epochs over which the multi-step loss anneals to the final step alone.
        learn_inner_lrs: LSLR, a learned step size per parameter tensor ("layer") and step.
        per_step_bn_weights: BNWB, separate batch-norm scales and shifts for each inner step
            (meta-learned, not adapted in the inner loop).
        per_step_bn_stats: BNRS, separate batch-norm running statistics for each inner step.
        first_order_epochs: DA, derivative-order annealing: first order for this many epochs,
            second order after (0: second order throughout).
        epoch_steps: meta-updates per epoch.
        task_type: the data's task type (passed at run time).
    """

    def __init__(
        self,
        backbone: Backbone,
        ways: int,
        inner_lr: float = 0.1,
        inner_steps: int = 5,
        test_inner_steps: int = 5,
        first_order: bool = False,
        bn_mode: str = "batch", head: str = "learned", vectorize: bool = False,
        train_queries: int | None = None, checkpoint_inner: bool = False,
        multi_step_loss: bool = True,
        msl_epochs: int = 10,
        learn_inner_lrs: bool = True,
        per_step_bn_weights: bool = True, per_step_bn_stats: bool = True,
        first_order_epochs: int = 50,
        epoch_steps: int = 500,
        task_type: TaskType = CLASSIFICATION,
    ) -> None:
        for key, value in (("algo.msl_epochs", msl_epochs), ("algo.epoch_steps", epoch_steps)):
            if value < 1:
                raise ValueError(f"{key} must be at least 1; got {value}")
        if first_order_epochs < 0:
            raise ValueError(f"algo.first_order_epochs must be non-negative; got "
                             f"{first_order_epochs}")
        super().__init__(backbone, ways, inner_lr=inner_lr, inner_steps=inner_steps,
                         test_inner_steps=test_inner_steps, first_order=first_order,
                         bn_mode=bn_mode, head=head, vectorize=vectorize,
                         task_type=task_type, train_queries=train_queries,
                         checkpoint_inner=checkpoint_inner,
                         first_order_steps=first_order_epochs * epoch_steps)
        self.multi_step_loss, self.msl_epochs = multi_step_loss, msl_epochs
        self.learn_inner_lrs = learn_inner_lrs
        self.per_step_bn_weights, self.per_step_bn_stats = per_step_bn_weights, per_step_bn_stats
        self.epoch_steps = epoch_steps
        steps = self.inner_steps
        norms = {name: m for name, m in self.net.named_modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        self._norm_affine = {f"{n}.{p}" for n, m in norms.items() if m.affine
                             for p in ("weight", "bias")} if per_step_bn_weights else set()
        self.inner_lrs = nn.ParameterDict({
            param_key(name): nn.Parameter(torch.full((steps,), float(inner_lr)))
            for name in self._adapted(self.net)
        }) if learn_inner_lrs else None
        self.bn_weights = nn.ParameterDict({
            param_key(name): nn.Parameter(
                self.net.get_parameter(name).detach().clone().expand(steps, -1).clone())
            for name in sorted(self._norm_affine)
        })
        self._stat_names: list[str] = []
        if per_step_bn_stats:
            for n, m in norms.items():
                if not m.track_running_stats:
                    continue
                for stat in ("running_mean", "running_var"):
                    name = f"{n}.{stat}"
                    self.register_buffer(f"step_{param_key(name)}",
                                         getattr(m, stat).detach().clone().expand(steps, -1)
                                         .clone())
                    self._stat_names.append(name)

    @property
    def epoch(self) -> int:
        """The epoch of the meta-update the trainer last announced (:meth:`scheduled`)."""
        return self.steps_done // self.epoch_steps

    # -- the hooks of MAML ------------------------------------------------------------------

    def _adapted(self, learner: nn.Module) -> Params:
        return {n: p for n, p in learner.named_parameters() if n not in self._norm_affine}

    def _step_size(self, training: bool) -> StepSize | Callable[[int], StepSize]:
        if self.inner_lrs is None:
            return self.inner_lr
        lrs, last = self.inner_lrs, self.inner_steps - 1
        names = list(self._adapted(self.net))
        return lambda i: {name: lrs[param_key(name)][min(i, last)] for name in names}

    def _state(self) -> StepState | None:
        if not self._norm_affine and not self._stat_names:
            return None
        last = self.inner_steps - 1

        def state(i: int) -> dict[str, Tensor]:
            i = min(i, last)
            tensors = {name: self.bn_weights[param_key(name)][i] for name in self._norm_affine}
            for name in self._stat_names:
                tensors[name] = self.get_buffer(f"step_{param_key(name)}")[i]
            return tensors

        return state

    def _query_loss(self, learner: nn.Module, trajectory: list[Params], query_x: Tensor,
                    query_y: Tensor) -> tuple[Tensor, Tensor]:
        if not (self.multi_step_loss and self.epoch < self.msl_epochs):
            return super()._query_loss(learner, trajectory, query_x, query_y)
        weights = msl_weights(self.inner_steps, self.epoch, self.msl_epochs)
        state = self._state()
        total: Tensor | float = 0.0
        for k in range(1, len(trajectory)):
            prediction = forward(learner, trajectory[k], query_x,
                                 None if state is None else state(k - 1))
            loss, score = self.task_type.loss_and_score(prediction, query_y)
            total = total + float(weights[k - 1]) * loss
        assert isinstance(total, Tensor)
        return total, score

