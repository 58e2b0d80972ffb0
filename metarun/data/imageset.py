"""What every image benchmark (MNIST, CIFAR, miniImageNet, tieredImageNet) shares: its folder
under ``data.root``, its pipeline (normalisation, training augmentation), whether its bank is
memory-mapped and whether it moves to the device, and turning decoded splits into banks.

A dataset module only says how to read its files: :meth:`ImageDataset.read` returns the decoded
splits (:class:`~metarun.data.cache.SplitImages`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metarun.data.augment import ImagePipeline
from metarun.data.bank import ClassImages, to_float
from metarun.data.cache import SplitImages
from metarun.tasktypes import CLASSIFICATION
from metarun.types import Split


class ImageDataset:
    """Base of the image benchmarks (``data=`` options with one module each).

    Args:
        root: data folder; the dataset lives in ``<root>/<folder>/``. ``~`` is expanded.
        cache_dir: where a decoded cache is written (never inside ``root``).
        mean: per-channel normalisation mean (``null``: none).
        std: per-channel normalisation standard deviation.
        augment: training augmentation (:data:`metarun.data.augment.AUGMENTATIONS`).
        padding: the ``metaoptnet`` random crop's padding, in pixels.
        on_device: move the whole bank to the device (``false``: it stays in CPU memory, or
            memory-mapped on disk, and only each batch moves).
        memmap: open the decoded cache memory-mapped instead of reading it into memory.
        download: fetch the published files when they are missing (where a download exists).
    """

    task_type = CLASSIFICATION
    folder = ""  # under data.root
    channels, size = 3, 32

    def __init__(self, root: str, cache_dir: str, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, augment: str = "none", padding: int = 0,
                 on_device: bool = True, memmap: bool = False, download: bool = True) -> None:
        self.pipeline = ImagePipeline(
            None if mean is None else tuple(float(m) for m in mean),
            None if std is None else tuple(float(s) for s in std), str(augment), int(padding))
        if self.pipeline.mean is not None and len(self.pipeline.mean) != self.channels:
            raise ValueError(f"data.mean must have {self.channels} values (one per channel); "
                             f"got {len(self.pipeline.mean)}")
        self.root = Path(os.path.expanduser(str(root))) / self.folder
        self.cache_dir = Path(os.path.expanduser(str(cache_dir)))
        self.on_device, self.memmap, self.download = on_device, memmap, download

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one model input."""
        return (self.channels, self.size, self.size)

    def read(self) -> dict[Split, SplitImages]:
        """Every split, decoded (from the files or the cache)."""
        raise NotImplementedError

    def load(self) -> dict[Split, ClassImages]:
        """One bank per split, with this dataset's pipeline."""
        banks = {}
        for split, part in self.read().items():
            banks[split] = ClassImages(torch.from_numpy(part.pixels),
                                       counts=torch.tensor(part.counts),
                                       pipeline=self.pipeline, resident=self.on_device,
                                       release=part.release)
        return banks

    def class_names(self) -> dict[Split, list[str]]:
        """Each split's class names, in bank order."""
        return {split: part.classes for split, part in self.read().items()}

    def preprocess(self, images: Sequence[Any]) -> Tensor:
        """Raw images (PIL images or uint8 arrays ``[H, W]`` / ``[H, W, C]``, any size) to
        model input ``[B, C, H, W]``: resized as the dataset's images were, then normalised
        as in evaluation."""
        if len(images) == 0:
            raise ValueError("preprocess needs at least one image")
        pixels = np.stack([to_pixels(im, self.size, self.channels) for im in images])
        return self.pipeline(to_float(torch.from_numpy(pixels)))


def to_pixels(image: Any, size: int, channels: int) -> np.ndarray:
    """One image (PIL, or a uint8 array ``[H, W]`` / ``[H, W, C]``) to ``[C, size, size]``
    uint8, resized with Lanczos filtering when it is not already that size."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def by_class(labels: np.ndarray, wanted: Sequence[int]) -> tuple[np.ndarray, list[int]]:
    """The positions of the images of classes ``wanted`` (in that order), grouped by class,
    and how many each has."""
    order, counts = [], []
    for c in wanted:
        idx = np.flatnonzero(labels == c)
        order.append(idx)
        counts.append(len(idx))
    return np.concatenate(order), counts


#: The class split of the ten-class datasets (MNIST, CIFAR-10): train on classes 0-4, validate
#: and test on classes 5-9. Ten classes cannot make three disjoint sets that each hold a 5-way
#: task, and 5-way is the setting every other benchmark reports; so validation and test share
#: the unseen classes but never an image: validation draws from their official training
#: images, the test from their official test images, which model selection never sees.
TEN_CLASS_SPLIT = {Split.TRAIN: (0, 1, 2, 3, 4), Split.VAL: (5, 6, 7, 8, 9),
                   Split.TEST: (5, 6, 7, 8, 9)}


def ten_class_splits(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                     names: Sequence[str]) -> dict[Split, SplitImages]:
    """:data:`TEN_CLASS_SPLIT` of ``(images [N, C, H, W], labels [N])`` from the official
    training and test files: the train classes get all their images (official train and test
    merged), validation the official training images, the test the official test images."""
    merged = (np.concatenate([train[0], test[0]]), np.concatenate([train[1], test[1]]))
    sources = {Split.TRAIN: merged, Split.VAL: train, Split.TEST: test}
    out = {}
    for split, classes in TEN_CLASS_SPLIT.items():
        images, labels = sources[split]
        order, counts = by_class(labels, classes)
        out[split] = SplitImages(images[order], [names[c] for c in classes], counts)
    return out
