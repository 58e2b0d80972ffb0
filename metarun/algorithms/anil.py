"""ANIL, Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals, ICLR 2020)."""

from __future__ import annotations

from torch import Tensor, nn

from metarun.algorithms.maml import MAML


class ANIL(MAML):
    """MAML whose inner loop adapts only the linear head.

    The body (backbone) is meta-learned by the outer loop alone: support and query features
    are computed once per task with the meta-parameters, and the head's fast weights are
    adapted on them. Arguments as :class:`~metarun.algorithms.maml.MAML`.
    """

    def _learner(self) -> nn.Module:
        return self.net[1]

    def _features(self, x: Tensor) -> Tensor:
        return self.net[0](x)
