"""The one inner loop shared by the gradient-based family.

Fast weights are a ``dict[str, Tensor]`` applied with ``torch.func.functional_call``; the
module's own parameters are never overwritten, so the meta-parameters stay leaves of the graph.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping

import torch
import torch.utils.checkpoint
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
#: A step size: one number, or one tensor per fast weight (broadcastable to it).
StepSize = float | Mapping[str, Tensor]
#: Extra tensors for step ``i`` of the loop (parameters or buffers that are not adapted).
StepState = Callable[[int], Mapping[str, Tensor]]
#: Step ``i``'s gradients to the directions the step moves along (scaled by its step size):
#: plain gradient descent when there is none; :class:`AdamDirections` for Adam.
Directions = Callable[[int, Params], Params]


class AdamDirections:
    """Adam's update direction with ``beta1 = 0`` (Reptile's inner optimizer), computed as
    ``torch.optim.Adam`` computes it: ``g / (sqrt(v / (1 - beta2^t)) + eps)``, where ``v`` is
    the running mean of ``g^2`` and ``t`` counts the steps taken. It keeps ``v``, so one serves
    one inner loop; ``v`` and ``steps`` given start it where an earlier one left off (the
    state the reference Reptile carries from task to task). Its tensor operations work under
    ``torch.func.vmap``."""

    def __init__(self, beta2: float = 0.999, eps: float = 1e-8, v: Params | None = None,
                 steps: int = 0) -> None:
        self.beta2, self.eps = beta2, eps
        self.v: Params = dict(v or {})
        self.start = self.steps = steps

    def __call__(self, i: int, grads: Params) -> Params:
        self.steps = self.start + i + 1
        correction = (1 - self.beta2 ** self.steps) ** 0.5
        out = {}
        for name, g in grads.items():
            v = self.v.get(name)
            v = torch.addcmul(torch.zeros_like(g) if v is None else v * self.beta2, g, g,
                              value=1 - self.beta2)
            self.v[name] = v
            out[name] = g / (v.sqrt() / correction + self.eps)
        return out


def forward(module: nn.Module, fast: Mapping[str, Tensor], x: Tensor,
            state: Mapping[str, Tensor] | None = None) -> Tensor:
    """``module(x)`` with its tensors replaced by ``fast`` (and ``state``, if given)."""
    return functional_call(module, {**fast, **state} if state else dict(fast), (x,))


def inner_trajectory(
    module: nn.Module,
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    steps: int,
    lr: StepSize | Callable[[int], StepSize],
    create_graph: bool,
    state: StepState | None = None,
    functional: bool = False,
    checkpoint: bool = False,
    directions: Directions | None = None,
) -> list[Params]:
    """Take ``steps`` steps of gradient descent on ``loss_fn(module(x), y)``.

    Args:
        module: the network; its parameters are replaced by the fast weights in every call.
        params: initial fast weights (usually the meta-parameters themselves). Parameters of
            ``module`` not in ``params`` keep their own values and are not adapted.
        x: support inputs.
        y: support targets.
        loss_fn: ``(prediction, target) -> scalar``.
        steps: number of gradient steps.
        lr: a :data:`StepSize`, or a function from the step index ``0..steps-1`` to one
            (per-step learning rates, as in MAML++).
        create_graph: keep the graph of the inner gradients, so the meta-gradient includes
            second-order terms. With ``False`` the inner gradients are constants (first-order
            MAML): the result still depends on ``params`` through the identity.
        state: tensors that step ``i`` uses but does not adapt (MAML++'s per-step batch-norm
            weights and statistics), as a function of ``i``.
        functional: take gradients with ``torch.func.grad`` instead of ``torch.autograd.grad``,
            which is what works under ``torch.func.vmap``.
        checkpoint: keep only each step's fast weights for the backward pass and recompute
            the step (its forward and its inner gradient) there (``torch.utils.checkpoint``):
            the memory of a second-order meta-gradient then grows by one set of weights per
            step instead of every activation of every step. The same meta-gradient.

    Returns:
        The fast weights before the first step and after each step: ``steps + 1`` dicts with
        the keys of ``params``.
    """
    if checkpoint and directions is not None:
        raise ValueError("an inner loop with its own step directions cannot be checkpointed")
    fast = dict(params)
    trajectory = [fast]
    with torch.enable_grad():  # adaptation needs gradients even inside no_grad evaluation
        for i in range(steps):
            size = lr(i) if callable(lr) else lr
            box = [state(i) if state is not None else None]  # a recomputation swaps copies in
            step = functools.partial(_step, module, tuple(fast), x, y, loss_fn, box,
                                     create_graph, functional, size,
                                     functools.partial(directions, i) if directions else None)
            weights = (torch.utils.checkpoint.checkpoint(
                step, *fast.values(), use_reentrant=False,
                context_fn=functools.partial(_contexts, module, box))
                if checkpoint else step(*fast.values()))
            fast = dict(zip(fast, weights, strict=True))
            trajectory.append(fast)
    return trajectory


class _Recomputing:
    """While a checkpointed step is recomputed: the same computation, but on copies of the
    running statistics (the module's buffers, and those passed in ``state``), which are
    thrown away, so the statistics are updated once, as without checkpointing, and nothing
    that autograd saved is changed in place. (A class, not a generator: a recomputation may
    enter it more than once.)"""

    def __init__(self, module: nn.Module, state: list[Mapping[str, Tensor] | None]) -> None:
        self.module, self.state = module, state
        self.swapped: list[tuple[nn.Module, str, Tensor]] = []
        self.original: Mapping[str, Tensor] | None = None

    def __enter__(self) -> None:
        for m in self.module.modules():
            for name, b in list(m._buffers.items()):
                if b is not None:
                    self.swapped.append((m, name, b))
                    m._buffers[name] = b.clone()
        self.original = self.state[0]
        if self.original is not None:
            self.state[0] = {k: v if v.requires_grad else v.clone()
                             for k, v in self.original.items()}

    def __exit__(self, *exc: object) -> None:
        for m, name, b in self.swapped:
            m._buffers[name] = b
        self.swapped.clear()
        self.state[0] = self.original


def _contexts(module: nn.Module, state: list[Mapping[str, Tensor] | None],
              ) -> tuple[contextlib.AbstractContextManager[None], _Recomputing]:
    return contextlib.nullcontext(), _Recomputing(module, state)


def _step(module: nn.Module, names: tuple[str, ...], x: Tensor, y: Tensor, loss_fn: LossFn,
          state: list[Mapping[str, Tensor] | None], create_graph: bool, functional: bool,
          size: StepSize, directions: Callable[[Params], Params] | None,
          *weights: Tensor) -> tuple[Tensor, ...]:
    """One inner step: the fast weights after it, in the order of ``names`` (``state[0]``:
    the step's other tensors)."""
    fast = dict(zip(names, weights, strict=True))
    grads = {n: g for n, g in zip(names, _gradients(module, fast, x, y, loss_fn, state[0],
                                                    create_graph, functional), strict=True)
             if g is not None}
    if directions is not None:
        grads = directions(grads)
    return tuple(w - _step_size(size, n) * grads[n] if n in grads else w
                 for n, w in fast.items())


def _gradients(module: nn.Module, fast: Params, x: Tensor, y: Tensor, loss_fn: LossFn,
               state: Mapping[str, Tensor] | None, create_graph: bool,
               functional: bool) -> list[Tensor | None]:
    if functional:
        def support_loss(weights: Params) -> Tensor:
            return loss_fn(forward(module, weights, x, state), y)

        grads = torch.func.grad(support_loss)(fast)
        return [grads[n] if create_graph else grads[n].detach() for n in fast]
    loss = loss_fn(forward(module, fast, x, state), y)
    return list(torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph,
                                    allow_unused=True))


def param_key(name: str) -> str:
    """A parameter name usable as a ``ParameterDict`` key or buffer name (no dots)."""
    return name.replace(".", "-")


def _step_size(lr: StepSize, name: str) -> float | Tensor:
    return lr if isinstance(lr, (int, float)) else lr[name]
