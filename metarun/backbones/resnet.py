"""The residual backbones of the few-shot literature: ResNet-12 and WRN-28-10.

* :class:`ResNet12`: MetaOptNet's (Lee et al. 2019), also FEAT's and most papers' since: four
  residual blocks of three 3x3 convolutions (64-160-320-640 channels), leaky ReLU (0.1), 2x2
  max-pool after each block, DropBlock in the last two blocks as an option; 84x84 input gives a
  5x5x640 map, average-pooled to 640-d (as FEAT; MetaOptNet flattens it to 16,000-d).
* :class:`WideResNet`: Zagoruyko & Komodakis (2016), depth 28 and width 10 as in LEO and
  S2M2: pre-activation blocks, 160-320-640 channels, global average pool to 640-d.

Batch norm is :class:`~metarun.backbones.norm.BatchNorm2d` (vmap-safe), so both work with every
algorithm, the MAML family's functional inner loop included.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.backbones.norm import BatchNorm2d
from metarun.types import Backbone


class DropBlock(nn.Module):
    """DropBlock (Ghiasi et al. 2018): drops ``block_size`` squares of a feature map, with a
    rate chosen so that about ``rate`` of the units are dropped; identity in eval mode."""

    def __init__(self, rate: float, block_size: int) -> None:
        super().__init__()
        self.rate, self.block_size = rate, block_size

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        size = x.shape[-1]
        block = min(self.block_size, size)
        gamma = self.rate / block**2 * size**2 / (size - block + 1) ** 2
        seeds = (torch.rand(x.shape[0], x.shape[1], size - block + 1, size - block + 1,
                            device=x.device) < gamma).to(x.dtype)
        pad = block - 1
        mask = 1 - F.max_pool2d(F.pad(seeds, (pad, pad, pad, pad)), block, stride=1)
        return x * mask * (mask.numel() / mask.sum().clamp_min(1.0))


class _Block(nn.Module):
    """Three 3x3 conv-BN(-leaky ReLU) layers with a 1x1 conv-BN shortcut, then max-pool."""

    def __init__(self, cin: int, cout: int, drop: nn.Module) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False),
                       BatchNorm2d(cout)]
            if i < 2:
                layers.append(nn.LeakyReLU(0.1))
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), BatchNorm2d(cout))
        self.pool, self.drop = nn.MaxPool2d(2, ceil_mode=True), drop

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.pool(F.leaky_relu(self.body(x) + self.shortcut(x), 0.1)))


class ResNet12(Backbone):
    """ResNet-12 (see the module docstring).

    Args:
        input_shape: ``(C, H, W)`` of the input images (from the dataset).
        channels: the four blocks' widths.
        dropblock: DropBlock rate in blocks 3 and 4 (0: off); blocks 1 and 2 use dropout at
            the same rate, as MetaOptNet.
        block_size: DropBlock's square side.
    """

    def __init__(self, input_shape: tuple[int, int, int],
                 channels: Sequence[int] = (64, 160, 320, 640), dropblock: float = 0.0,
                 block_size: int = 5) -> None:
        super().__init__()
        widths = [int(c) for c in channels]
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"backbone.channels must be 4 positive widths; got {list(channels)}")
        if not 0.0 <= dropblock < 1.0 or block_size < 1:
            raise ValueError(f"backbone.dropblock must be in [0, 1) and backbone.block_size "
                             f"positive; got {dropblock}, {block_size}")
        self.input_shape = tuple(int(v) for v in input_shape)
        blocks, cin = [], self.input_shape[0]
        for i, cout in enumerate(widths):
            drop = (DropBlock(dropblock, block_size) if i >= 2 else nn.Dropout(dropblock))
            blocks.append(_Block(cin, cout, drop))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = widths[-1]
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` images to ``[B, out_dim]`` (average-pooled) embeddings."""
        return self.blocks(x).mean(dim=(2, 3))


class _WideBlock(nn.Module):
    """Pre-activation: BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3, plus the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1, self.bn2 = BatchNorm2d(cin), BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = (None if cin == cout and stride == 1
                         else nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        a = F.relu(self.bn1(x))
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(a)))))
        return out + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(Backbone):
    """WRN-depth-width (see the module docstring).

    Args:
        input_shape: ``(C, H, W)`` of the input images (from the dataset).
        depth: ``6n + 4`` layers (28: four blocks per group).
        width: the widening factor (10: 160-320-640 channels).
        dropout: dropout rate inside each block.
    """

    def __init__(self, input_shape: tuple[int, int, int], depth: int = 28, width: int = 10,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 or width < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"backbone.depth must be 6n+4 (>= 10), backbone.width positive and "
                             f"backbone.dropout in [0, 1); got {depth}, {width}, {dropout}")
        self.input_shape = tuple(int(v) for v in input_shape)
        n, widths = (depth - 4) // 6, [16 * width, 32 * width, 64 * width]
        layers: list[nn.Module] = [nn.Conv2d(self.input_shape[0], 16, 3, padding=1, bias=False)]
        cin = 16
        for group, cout in enumerate(widths):
            for i in range(n):
                layers.append(_WideBlock(cin, cout, 2 if group and i == 0 else 1, dropout))
                cin = cout
        layers += [BatchNorm2d(cin), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.out_dim = cin
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` images to ``[B, out_dim]`` (average-pooled) embeddings."""
        return self.features(x).mean(dim=(2, 3))


def _init(model: nn.Module) -> None:
    """He initialisation of the convolutions, unit batch-norm scale (as MetaOptNet, WRN)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
