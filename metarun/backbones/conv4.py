"""The Conv-4 backbone of Vinyals et al. (2016), used by MAML and Prototypical Networks."""

from __future__ import annotations

from torch import Tensor, nn

from metarun.backbones.norm import BatchNorm2d
from metarun.types import Backbone

#: How a block halves the resolution (``backbone.downsample``).
DOWNSAMPLE = ("max_pool", "stride")


class Conv4(Backbone):
    """Blocks of [3x3 conv, batch norm, ReLU, 2x2 max-pool], then flatten.

    On 28x28 Omniglot four blocks of 64 filters give a 64-d embedding; on 84x84 images,
    1600-d.

    ``downsample="stride"`` is MAML's Omniglot network instead (Finn et al. 2017, section 5.2;
    their code's ``max_pool=False``): each 3x3 convolution has stride 2 and there is no
    max-pool, and the last feature map is averaged over its positions, so the embedding has
    ``hidden`` dimensions at any input size. Every convolution after the first then runs at
    a quarter of the positions, which makes a step several times cheaper.

    Batch norm: :class:`~metarun.backbones.norm.BatchNorm2d` (``nn.BatchNorm2d``'s parameters
    and maths, vmap-safe), with learnable affine parameters and running statistics. Which
    statistics are used at meta-test time is not this module's choice: the algorithm's
    ``bn_mode`` decides (see :mod:`metarun.algorithms.base`).

    Args:
        input_shape: ``(C, H, W)`` of the input images.
        hidden: filters per block.
        layers: number of blocks.
        downsample: ``max_pool`` (2x2 max-pool after each block) or ``stride`` (stride-2
            convolutions, then the average over positions).
        pooled_blocks: with ``max_pool``, how many of the first blocks have the max-pool
            (``None``: all). The Relation Network's embedding pools in the first two of four
            blocks, so that its relation module gets feature maps (7x7 on Omniglot) to convolve.

    With ``max_pool`` the embedding is the last feature map flattened, and ``feature_shape``
    says its ``(C, H, W)`` (:class:`~metarun.types.Backbone`).
    """

    def __init__(self, input_shape: tuple[int, int, int], hidden: int = 64,
                 layers: int = 4, downsample: str = "max_pool",
                 pooled_blocks: int | None = None) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"backbone.hidden must be positive; got {hidden}")
        if downsample not in DOWNSAMPLE:
            raise ValueError(f"backbone.downsample must be one of {', '.join(DOWNSAMPLE)}; "
                             f"got {downsample!r}")
        strided = downsample == "stride"
        channels, height, width = (int(v) for v in input_shape)
        self.input_shape = (channels, height, width)
        pooled = _pooled_blocks(layers, pooled_blocks, strided)
        if layers < 1 or min(height, width) < 2 ** (layers if strided else pooled):
            raise ValueError(
                f"backbone.layers must be in [1, log2({min(height, width)})] for "
                f"{height}x{width} input (counting pooled blocks only, with "
                f"backbone.pooled_blocks); got {layers}"
            )
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [
                nn.Conv2d(channels if i == 0 else hidden, hidden, 3, padding=1,
                          stride=2 if strided else 1),
                BatchNorm2d(hidden),
                nn.ReLU(),
                *([nn.MaxPool2d(2)] if i < pooled else []),
            ]
        if strided:
            blocks.append(nn.AdaptiveAvgPool2d(1))
            self.out_dim = hidden
        else:
            self.feature_shape = (hidden, height // 2**pooled, width // 2**pooled)
            self.out_dim = hidden * self.feature_shape[1] * self.feature_shape[2]
        self.features = nn.Sequential(*blocks, nn.Flatten())

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` images to ``[B, out_dim]`` embeddings."""
        return self.features(x)


def _pooled_blocks(layers: int, pooled_blocks: int | None, strided: bool) -> int:
    """How many blocks end in a max-pool (none when the convolutions stride)."""
    if pooled_blocks is None:
        return 0 if strided else layers
    if strided:
        raise ValueError("backbone.pooled_blocks applies to backbone.downsample=max_pool; "
                         "with stride every block halves the resolution")
    if not 0 <= pooled_blocks <= layers:
        raise ValueError(f"backbone.pooled_blocks must be in [0, backbone.layers={layers}] "
                         f"(or null: all); got {pooled_blocks}")
    return pooled_blocks


