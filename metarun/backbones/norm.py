"""Batch norm whose scale and shift are applied outside the fused kernel."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with the same parameters, buffers, state dict and maths, computed as
    ``normalise(x) * weight + bias`` with the affine step outside ``F.batch_norm``.

    Why: under ``torch.func.vmap`` the fused op's backward batching rule returns a wrong input
    gradient when the weight differs per task (pytorch/functorch#534), which is exactly MAML's
    case once the inner loop has adapted the batch-norm weights. With the weight kept out of
    the kernel, vectorised and looped meta-gradients agree (``tests/unit/test_vectorize.py``).
    Being a ``_BatchNorm``, it follows the algorithm's ``bn_mode`` like any other.

    The separate affine step costs a looped MAML step about a tenth of its time on a CPU, so
    it is only taken while ``separate_affine`` is set: an algorithm sets it for the duration
    of a ``vmap`` (:meth:`~metarun.algorithms.base.Algorithm.vmap_safe_norms`); otherwise
    this is ``nn.BatchNorm2d``'s fused kernel.
    """

    #: Take the affine step outside the fused kernel (under ``vmap``).
    separate_affine = False

    def forward(self, x: Tensor) -> Tensor:
        if not self.separate_affine:
            return super().forward(x)
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and
                                            self.running_var is None)
        use_buffers = not self.training or self.track_running_stats
        y = F.batch_norm(
            x,
            self.running_mean if use_buffers else None,
            self.running_var if use_buffers else None,
            None, None, use_batch_stats, momentum, self.eps,
        )
        if not self.affine:
            return y
        shape = (1, -1) + (1,) * (y.dim() - 2)
        return y * self.weight.view(shape) + self.bias.view(shape)
