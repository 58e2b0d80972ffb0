"""The one inner loop shared by the gradient-based family.

Fast weights are a ``dict[str, Tensor]`` applied with ``torch.func.functional_call``; the
module's own parameters are never overwritten, so the meta-parameters stay leaves of the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


def inner_loop(
    module: nn.Module,
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    steps: int,
    lr: float | Mapping[str, Tensor],
    create_graph: bool,
) -> Params:
    """Take ``steps`` steps of gradient descent on ``loss_fn(module(x), y)``.

    Args:
        module: the network; its parameters are replaced by ``params`` in every call.
        params: initial fast weights (usually the meta-parameters themselves).
        x: support inputs.
        y: support targets.
        loss_fn: ``(prediction, target) -> scalar``.
        steps: number of gradient steps (0 returns ``params`` unchanged).
        lr: a step size, or one tensor per parameter (broadcastable to it, as in Meta-SGD).
        create_graph: keep the graph of the inner gradients, so the meta-gradient includes
            second-order terms. With ``False`` the inner gradients are constants (first-order
            MAML): the result still depends on ``params`` through the identity.

    Returns:
        The adapted fast weights, same keys as ``params``.
    """
    fast = dict(params)
    with torch.enable_grad():  # adaptation needs gradients even inside no_grad evaluation
        for _ in range(steps):
            loss = loss_fn(functional_call(module, fast, (x,)), y)
            grads = torch.autograd.grad(
                loss, list(fast.values()), create_graph=create_graph, allow_unused=True
            )
            fast = {
                name: w if g is None else w - _step_size(lr, name) * g
                for (name, w), g in zip(fast.items(), grads, strict=True)
            }
    return fast


def _step_size(lr: float | Mapping[str, Tensor], name: str) -> float | Tensor:
    return lr if isinstance(lr, (int, float)) else lr[name]
