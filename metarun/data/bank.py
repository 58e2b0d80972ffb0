"""The images of one split, grouped by class: what every sampler gathers from.

A bank is one uint8 tensor of images sorted by class (``[total, C, H, W]``) with a count per
class, so classes may hold different numbers of images (tieredImageNet, MNIST), and the tensor
may be a memory-mapped file that never enters memory whole (episodes gather only the images
they use). Gathered images become model input here, in one place: scaled to ``[0, 1]``,
augmented when a training sampler passes its generator, then normalised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from metarun.data.augment import ImagePipeline
    from metarun.data.episodes import EpisodeSampler


def to_float(images: Tensor) -> Tensor:
    """Model input from stored uint8 pixels: float in ``[0, 1]``, same shape."""
    return images.float().div_(255.0)


@dataclass(frozen=True)
class ClassImages:
    """The images of one split, grouped by class.

    Attributes:
        images: ``[num_classes, per_class, C, H, W]`` uint8 (every class the same size), or
            ``[total, C, H, W]`` uint8 sorted by class with ``counts`` giving each class's size.
        groups: ``[num_classes]`` group id per class (e.g. the alphabet), or ``None``. When set,
            every episode draws all its classes from one group.
        counts: ``[num_classes]`` images per class, for a flat ``images``.
        pipeline: normalisation (and training augmentation) of gathered images; ``None``
            scales to ``[0, 1]`` only.
        resident: whether :meth:`to` moves the bank to the device (``False``: the bank stays
            where it is, memory-mapped on the CPU, and only gathered images move).
        output_device: where gathered images go when the bank itself stays put; ``None``:
            the bank's own device.
        release: called after each gather from a memory-mapped bank, to drop the pages read
            (:func:`metarun.data.cache.BankCache.read`).
    """

    images: Tensor
    groups: Tensor | None = None
    counts: Tensor | None = None
    pipeline: ImagePipeline | None = None
    resident: bool = True
    output_device: torch.device | None = None
    release: Callable[[], None] | None = None
    pixels: Tensor = field(init=False, repr=False)  # [total, C, H, W], sorted by class
    starts: Tensor = field(init=False, repr=False)  # [num_classes] first image of each class

    def __post_init__(self) -> None:
        x = self.images
        grid = x.dim() == 5
        if x.dtype != torch.uint8 or x.dim() not in (4, 5) or (not grid and self.counts is None):
            raise ValueError(
                "ClassImages.images must be uint8 [classes, per_class, C, H, W], or "
                f"[total, C, H, W] with counts; got {x.dtype} {tuple(x.shape)}"
            )
        if grid:
            counts = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
            pixels = x.flatten(0, 1)
        else:
            counts, pixels = torch.as_tensor(self.counts, dtype=torch.long), x
        if self.counts is not None and not torch.equal(
                torch.as_tensor(self.counts, dtype=torch.long), counts):
            raise ValueError("ClassImages.counts must match the grid of images")
        if counts.dim() != 1 or int(counts.sum()) != len(pixels) or bool((counts < 1).any()):
            raise ValueError("ClassImages.counts must be positive and sum to the images")
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "pixels", pixels)
        object.__setattr__(self, "starts", torch.cumsum(counts, 0) - counts)
        if self.groups is not None and self.groups.shape != (self.num_classes,):
            raise ValueError("ClassImages.groups must have one entry per class")

    @property
    def num_classes(self) -> int:
        return int(self.class_counts.shape[0])

    @property
    def class_counts(self) -> Tensor:
        """``[num_classes]`` images per class (CPU)."""
        assert self.counts is not None
        return self.counts

    @property
    def per_class(self) -> int:
        """The fewest images any class has: what an episode may ask of every class."""
        return int(self.class_counts.min())

    @property
    def max_count(self) -> int:
        return int(self.class_counts.max())

    @property
    def uniform(self) -> bool:
        return self.per_class == self.max_count

    @property
    def device(self) -> torch.device:
        return self.output_device or self.pixels.device

    def to(self, device: torch.device | str) -> ClassImages:
        """This bank for ``device``: moved there, or (not :attr:`resident`, a bank too large
        to copy) left where it is, with gathered images sent there."""
        device = torch.device(device)
        if not self.resident:
            return replace(self, output_device=device)
        return replace(self, images=self.images.to(device), output_device=None)

    @property
    def description(self) -> str:
        if self.uniform:
            return f"{self.num_classes} classes"
        return f"{self.num_classes} classes of {self.per_class}-{self.max_count} images"

    def sampler(self, ways: int, shots: int, queries: int,
                setting: str = "task") -> EpisodeSampler:
        """An N-way K-shot Q-query sampler over this split (``setting``: the config keys that
        chose the shape, named in errors: ``task`` or ``eval``)."""
        from metarun.data.episodes import EpisodeSampler

        return EpisodeSampler(self, ways, shots, queries, setting)

    def draw(self, keys: Tensor, classes: Tensor, k: int) -> Tensor:
        """``k`` distinct images of each class in ``classes`` (``[..., ]`` ids), from random
        ``keys`` ``[..., max_count]``: the top ``k`` keys among each class's images."""
        if not self.uniform:
            sizes = self.class_counts[classes][..., None]
            keys = keys.masked_fill(torch.arange(keys.shape[-1]) >= sizes, -1.0)
        return keys.topk(k, dim=-1).indices

    def gather(self, classes: Tensor, images: Tensor,
               generator: torch.Generator | None = None) -> Tensor:
        """Model input of images ``images`` (ids within their class) of ``classes``, both
        ``[n]`` on the CPU: ``[n, C, H, W]`` float on :attr:`device`. With ``generator`` (a
        training sampler's), the pipeline's augmentation is drawn from it."""
        flat = self.starts[classes] + images
        x = self.pixels.index_select(0, flat.to(self.pixels.device))
        if self.release is not None:
            self.release()
        x = to_float(x.to(self.device, non_blocking=True))
        if self.pipeline is None:
            return x
        return self.pipeline(x, generator)
