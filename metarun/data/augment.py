"""Normalisation and training augmentation of whole batches, on the batch's device.

The published recipes are named options of ``data.augment``:

* ``none``: no augmentation.
* ``metaoptnet``: random crop with zero padding (``padding`` pixels each side), horizontal flip
  and colour jitter (brightness, contrast, saturation 0.4), as in MetaOptNet's training
  transform (Lee et al. 2019).
* ``feat``: RandomResizedCrop (scale 0.08-1, aspect 3/4-4/3) and horizontal flip, as in FEAT's
  ResNet training transform (Ye et al. 2020).

Every random choice (flip, offset, box, jitter factor) is drawn per image from the training
sampler's CPU ``torch.Generator``, never the global RNG, so a run is reproducible and a resumed
run bit-exact. The pixel maths is torchvision's: the jitter uses the formulas of
``torchvision.transforms.v2.functional.adjust_brightness`` / ``adjust_contrast`` /
``adjust_saturation`` (tested equal per image); the resized crop is
``torchvision.ops.roi_align`` (bilinear, equal to ``resized_crop`` inside the box), batched
over images with different parameters, which torchvision's transforms (one parameter draw per
call) cannot do. Two differences from torchvision's ``ColorJitter``: the three adjustments are
applied in a fixed order (brightness, contrast, saturation) rather than a random one, and hue
is not jittered (neither recipe does).
Evaluation never augments: only a training sampler passes its generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

AUGMENTATIONS = ("none", "metaoptnet", "feat")
_GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


@dataclass(frozen=True)
class ImagePipeline:
    """Gathered ``[B, C, H, W]`` images in ``[0, 1]`` to model input.

    Args:
        mean: per-channel mean to subtract (``None``: no normalisation).
        std: per-channel standard deviation to divide by.
        augment: one of :data:`AUGMENTATIONS`, applied to training batches only.
        padding: the random crop's zero padding (``metaoptnet``), in pixels.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: str = "none"
    padding: int = 0

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"data.augment must be one of {', '.join(AUGMENTATIONS)}; got "
                             f"{self.augment!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("data.mean and data.std are given together or not at all")
        if self.std is not None and (len(self.std) != len(self.mean or ()) or
                                     min(self.std) <= 0):
            raise ValueError(f"data.std must be positive, one per channel of data.mean; got "
                             f"{self.std}")
        if self.padding < 0:
            raise ValueError(f"data.padding must be at least 0; got {self.padding}")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment (when ``generator`` is given and :attr:`augment` is not ``none``), then
        normalise."""
        if generator is not None and self.augment == "metaoptnet":
            x = random_crop(x, self.padding, generator)
            x = flip(x, generator)
            x = jitter(x, generator)
        elif generator is not None and self.augment == "feat":
            x = random_resized_crop(x, generator)
            x = flip(x, generator)
        return self.normalize(x)

    def normalize(self, x: Tensor) -> Tensor:
        if self.mean is None or self.std is None:
            return x
        if len(self.mean) != x.shape[1]:
            raise ValueError(f"data.mean has {len(self.mean)} values; the images have "
                             f"{x.shape[1]} channels")
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(shape)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(shape)
        return (x - mean) / std


def _uniform(n: int, low: float, high: float, generator: torch.Generator,
             device: torch.device) -> Tensor:
    return (low + (high - low) * torch.rand(n, generator=generator)).to(device)


def flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Each image mirrored left-right with probability 1/2."""
    mirrored = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(mirrored[:, None, None, None], x.flip(-1), x)


def random_crop(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Each image zero-padded by ``padding`` on every side, then cropped back to its size at
    a uniformly drawn offset (torchvision's ``RandomCrop(size, padding)``)."""
    if padding == 0:
        return x
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    top = torch.randint(2 * padding + 1, (b,), generator=generator).to(x.device)
    left = torch.randint(2 * padding + 1, (b,), generator=generator).to(x.device)
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [B, H, 1]
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, :]  # [B, 1, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def _grey(x: Tensor) -> Tensor:
    """``[B, 1, H, W]`` luma (torchvision's weights); a one-channel image is its own."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (_GREY[0] * r + _GREY[1] * g + _GREY[2] * b).unsqueeze(1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0.0, 1.0)


def jitter(x: Tensor, generator: torch.Generator, strength: float = 0.4) -> Tensor:
    """Brightness, contrast and saturation, each by a factor drawn uniformly from
    ``[1 - strength, 1 + strength]`` per image."""
    b, lo, hi = len(x), max(0.0, 1 - strength), 1 + strength
    bright, contrast, sat = (_uniform(b, lo, hi, generator, x.device) for _ in range(3))
    x = _blend(x, torch.zeros_like(x), bright)
    x = _blend(x, _grey(x).mean(dim=(1, 2, 3), keepdim=True), contrast)
    if x.shape[1] == 3:
        x = _blend(x, _grey(x), sat)
    return x


def crop_boxes(b: int, h: int, w: int, generator: torch.Generator,
               scale: tuple[float, float] = (0.08, 1.0),
               ratio: tuple[float, float] = (3 / 4, 4 / 3), tries: int = 10) -> Tensor:
    """``[B, 4]`` boxes ``(x0, y0, x1, y1)`` in pixels, drawn as torchvision's
    ``RandomResizedCrop.get_params`` does: up to ``tries`` (area, aspect) draws, the first
    that fits; the whole image when none does."""
    area = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(b, tries, generator=generator))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(b, tries, generator=generator))
    cw = torch.sqrt(area * aspect).round()
    ch = torch.sqrt(area / aspect).round()
    fits = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((b,), -1))
    pick = first.clamp_min(0)[:, None]
    cw = torch.where(first >= 0, cw.gather(1, pick)[:, 0], torch.full((b,), float(w)))
    ch = torch.where(first >= 0, ch.gather(1, pick)[:, 0], torch.full((b,), float(h)))
    x0 = (torch.rand(b, generator=generator) * (w - cw + 1)).floor()
    y0 = (torch.rand(b, generator=generator) * (h - ch + 1)).floor()
    return torch.stack([x0, y0, x0 + cw, y0 + ch], dim=1)


def random_resized_crop(x: Tensor, generator: torch.Generator) -> Tensor:
    """Each image cropped to a box of :func:`crop_boxes` and resized back to its size."""
    from torchvision.ops import roi_align

    b, _, h, w = x.shape
    boxes = crop_boxes(b, h, w, generator).to(x.device, x.dtype)
    rois = torch.cat([torch.arange(b, device=x.device, dtype=x.dtype)[:, None], boxes], 1)
    # One sample per output pixel at its centre: bilinear resizing of the box, as
    # torchvision's resized_crop (antialias off; a crop is never shrunk here).
    return roi_align(x, rois, output_size=(h, w), spatial_scale=1.0, sampling_ratio=1,
                     aligned=True)
