"""A multilayer perceptron: the MAML paper's sinusoid network (2 hidden layers of 40, ReLU)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from metarun.types import Backbone


class MLP(Backbone):
    """Blocks of [linear, ReLU] on flat inputs.

    No batch norm, so ``algo.bn_mode`` has nothing to act on. The algorithm adds the output
    layer (its head), so ``hidden=[40, 40]`` with MAML's head is the paper's 1-40-40-1 network.

    Args:
        input_shape: shape of one input; it is flattened (``(1,)`` for the sinusoid).
        hidden: width of each hidden layer.
    """

    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int] = (40, 40)) -> None:
        super().__init__()
        widths = [int(w) for w in hidden]
        if not widths or min(widths) < 1:
            raise ValueError(f"backbone.hidden must be a non-empty list of positive widths; "
                             f"got {list(hidden)}")
        self.input_shape = tuple(int(d) for d in input_shape)
        features = 1
        for d in input_shape:
            features *= int(d)
        layers: list[nn.Module] = [nn.Flatten()]
        for width in widths:
            layers += [nn.Linear(features, width), nn.ReLU()]
            features = width
        self.layers = nn.Sequential(*layers)
        self.out_dim = features

    def forward(self, x: Tensor) -> Tensor:
        """``[B, *input_shape]`` to ``[B, out_dim]``."""
        return self.layers(x)
