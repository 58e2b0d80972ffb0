"""Non-episodic training data drawn from one split: verification pairs and labelled images.

Some learners do not meta-train on N-way episodes: Siamese networks learn from same/different
pairs, the fine-tuning baselines from ordinary classification over all training classes. These
samplers keep the episode samplers' contract: ``sample(n, generator)`` draws ``n`` groups with a
CPU ``torch.Generator`` (never the global RNG) and gathers pixels on the bank's device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarun.data.episodes import _distinct
from metarun.types import ClassSource, LabelledBatch, PairBatch


class PairSampler:
    """Draws verification pairs from one split.

    Each group holds ``pairs`` pairs, ``round(same_fraction * pairs)`` of them from one class
    (two distinct images of a uniformly drawn class) and the rest from two distinct classes
    (one image of each), same pairs first.

    Args:
        bank: the split's images (the train split: pairs never leave it).
        pairs: pairs per group.
        same_fraction: fraction of same-class pairs in each group, in ``[0, 1]``.
    """

    def __init__(self, bank: ClassSource, pairs: int, same_fraction: float) -> None:
        if pairs < 1:
            raise ValueError(f"algo.pairs must be at least 1; got {pairs}")
        if not 0.0 <= same_fraction <= 1.0:
            raise ValueError(f"algo.same_fraction must be in [0, 1]; got {same_fraction}")
        if bank.per_class < 2 or bank.num_classes < 2:
            raise ValueError("pairs need at least 2 classes and 2 images per class")
        self.bank = bank
        self.pairs = pairs
        self.n_same = round(same_fraction * pairs)

    def sample(self, n: int, generator: torch.Generator) -> PairBatch:
        """``n`` groups of pairs, flattened to ``n * pairs`` pairs."""
        bank, n_same, n_diff = self.bank, self.n_same, self.pairs - self.n_same
        same_cls = torch.randint(bank.num_classes, (n, n_same, 1), generator=generator)
        keys = torch.rand(n, n_same, bank.max_count, generator=generator)
        same_img = bank.draw(keys, same_cls[..., 0], 2)
        diff_cls = _distinct(n * n_diff, 2, bank.num_classes, generator).view(n, n_diff, 2)
        diff_img = _uniform_image(bank, diff_cls, generator)
        classes = torch.cat([same_cls.expand(n, n_same, 2), diff_cls], dim=1).flatten(0, 1)
        images = torch.cat([same_img, diff_img], dim=1).flatten(0, 1)
        same = torch.cat([torch.ones(n, n_same), torch.zeros(n, n_diff)], dim=1).flatten()
        return PairBatch(
            first=bank.gather(classes[:, 0], images[:, 0], generator),
            second=bank.gather(classes[:, 1], images[:, 1], generator),
            same=same.to(bank.device),
            classes=classes,
        )


class ImageSampler:
    """Draws labelled images uniformly from all images of one split.

    Args:
        bank: the split's images.
        batch_size: images per group.
    """

    def __init__(self, bank: ClassSource, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"algo.batch_size must be at least 1; got {batch_size}")
        self.bank = bank
        self.batch_size = batch_size

    def sample(self, n: int, generator: torch.Generator) -> LabelledBatch:
        """``n`` groups of ``batch_size`` images, flattened to ``n * batch_size``."""
        size, bank = n * self.batch_size, self.bank
        if bank.uniform:
            classes = torch.randint(bank.num_classes, (size,), generator=generator)
            images = torch.randint(bank.per_class, (size,), generator=generator)
        else:  # every image equally likely, whatever the size of its class
            flat = torch.randint(int(bank.class_counts.sum()), (size,), generator=generator)
            classes = torch.searchsorted(bank.starts, flat, right=True) - 1
            images = flat - bank.starts[classes]
        return LabelledBatch(bank.gather(classes, images, generator), classes.to(bank.device))


def _uniform_image(bank: ClassSource, classes: Tensor, generator: torch.Generator) -> Tensor:
    """One uniformly drawn image id within each class of ``classes``."""
    if bank.uniform:
        return torch.randint(bank.per_class, tuple(classes.shape), generator=generator)
    u = torch.rand(tuple(classes.shape), generator=generator)
    return (u * bank.class_counts[classes]).long().clamp_max(bank.class_counts[classes] - 1)
