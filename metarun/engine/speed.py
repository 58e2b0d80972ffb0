"""Options that make meta-training faster without changing what it computes:
``train.channels_last`` and ``train.compile``.

- ``channels_last``: the learner's 4-d weights in NHWC order, which convolutions on recent
  GPUs (and oneDNN on CPUs) run faster; the inputs keep their order, and a convolution with
  NHWC weights produces NHWC activations.
- ``compile``: each backbone compiled in place (``nn.Module.compile``, so the state dict keys
  do not change) with ``torch.compile``'s default backend (``true``) or the one named.
  Compiled code cannot be differentiated twice, so second-order methods are refused in one
  line; first-order ones (FOMAML, Reptile, ANIL or MAML with ``algo.first_order=true``) and
  the metric and fine-tuning learners compile. The first steps are slow: each new input shape
  (support and query sets differ) is compiled once.
"""

from __future__ import annotations

import torch
from torch import nn

from metarun.algorithms.base import Algorithm
from metarun.types import Backbone


def backbones(learner: nn.Module) -> list[Backbone]:
    """The learner's backbones (outermost only)."""
    found: list[Backbone] = []
    for m in learner.modules():
        if isinstance(m, Backbone) and not any(m in set(b.modules()) for b in found):
            found.append(m)
    return found


def apply(learner: Algorithm, channels_last: bool = False,
          compile_with: bool | str = False) -> None:
    """Apply the options to a built learner, on its device."""
    if channels_last:
        learner.to(memory_format=torch.channels_last)
    if not compile_with:
        return
    if learner.second_order:
        raise ValueError("train.compile cannot train a second-order method: torch.compile'd "
                         "code cannot be differentiated twice; use algo.first_order=true or "
                         "train.compile=false")
    backend = "inductor" if compile_with is True else str(compile_with)
    for backbone in backbones(learner):
        backbone.compile(backend=backend)
