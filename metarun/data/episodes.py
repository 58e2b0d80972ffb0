"""Tensor-native episode sampling.

A split is one uint8 tensor ``[classes, images_per_class, C, H, W]`` that sits on the target
device; an episode is a draw of indices from a ``torch.Generator`` (on the CPU, so episodes are
the same whatever the device) followed by one gather. Nothing here decodes images or reads the
global RNG.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from metarun.types import Episode, EpisodeBatch, TaskIndex, TaskSampler


def to_float(images: Tensor) -> Tensor:
    """Model input from stored uint8 pixels: float in ``[0, 1]``, same shape."""
    return images.float().div_(255.0)


@dataclass(frozen=True)
class ClassImages:
    """The images of one split, grouped by class.

    Attributes:
        images: ``[num_classes, per_class, C, H, W]`` uint8.
        groups: ``[num_classes]`` group id per class (e.g. the alphabet), or ``None``. When set,
            every episode draws all its classes from one group.
    """

    images: Tensor
    groups: Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dim() != 5 or self.images.dtype != torch.uint8:
            raise ValueError(
                "ClassImages.images must be uint8 [classes, per_class, C, H, W]; got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.groups is not None and self.groups.shape != (self.num_classes,):
            raise ValueError("ClassImages.groups must have one entry per class")

    @property
    def num_classes(self) -> int:
        return int(self.images.shape[0])

    @property
    def per_class(self) -> int:
        return int(self.images.shape[1])

    def to(self, device: torch.device | str) -> ClassImages:
        return ClassImages(self.images.to(device), self.groups)

    @property
    def description(self) -> str:
        return f"{self.num_classes} classes"

    def sampler(self, ways: int, shots: int, queries: int,
                setting: str = "task") -> EpisodeSampler:
        """An N-way K-shot Q-query sampler over this split (``setting``: the config keys that
        chose the shape, named in errors: ``task`` or ``eval``)."""
        return EpisodeSampler(self, ways, shots, queries, setting)


@dataclass(frozen=True)
class EpisodeIndex(TaskIndex):
    """Which images make up a batch of episodes, without the pixels.

    Attributes:
        classes: ``[T, N]`` class ids; position ``i`` is episode-local label ``i``.
        images: ``[T, N, K+Q]`` image ids within each class; the first K are the support set.
    """

    classes: Tensor
    images: Tensor


class EpisodeSampler:
    """Draws N-way K-shot Q-query episodes from one split.

    Classes are a uniformly random ordered subset of the split (so labels ``0..N-1`` map to
    classes in random order); each class contributes K support and Q query images, all
    distinct.

    Args:
        bank: the split's images.
        ways: N, classes per episode.
        shots: K, support images per class.
        queries: Q, query images per class.
    """

    def __init__(self, bank: ClassImages, ways: int, shots: int, queries: int,
                 setting: str = "task") -> None:
        k = setting
        if ways < 2:
            raise ValueError(f"{k}.ways must be at least 2; got {ways}")
        if shots < 1 or queries < 1:
            raise ValueError(f"{k}.shots and {k}.queries must be at least 1; got {shots}, "
                             f"{queries}")
        if shots + queries > bank.per_class:
            raise ValueError(
                f"{k}.shots + {k}.queries = {shots + queries} exceeds the {bank.per_class} "
                "images per class of this dataset"
            )
        self.bank = bank
        self.ways, self.shots, self.queries = ways, shots, queries
        self._group_classes: list[Tensor] = []
        if bank.groups is None:
            if ways > bank.num_classes:
                raise ValueError(
                    f"{k}.ways = {ways} exceeds the {bank.num_classes} classes of this split"
                )
        else:
            members = [torch.nonzero(bank.groups == g).flatten()
                       for g in torch.unique(bank.groups)]
            self._group_classes = [m for m in members if len(m) >= ways]
            if not self._group_classes:
                largest = max(len(m) for m in members)
                raise ValueError(
                    f"{k}.ways = {ways} exceeds the classes of every group in this split "
                    f"(largest group: {largest}); lower {k}.ways or draw across groups"
                )

    def sample_indices(self, n: int, generator: torch.Generator) -> EpisodeIndex:
        """Draw ``n`` episodes' indices with ``generator`` (a CPU generator)."""
        n_img = self.shots + self.queries
        # Random keys + topk: a uniform ordered subset without replacement, vectorised.
        images = torch.rand(n, self.ways, self.bank.per_class, generator=generator)
        images = images.topk(n_img, dim=-1).indices
        if not self._group_classes:
            classes = _distinct(n, self.ways, self.bank.num_classes, generator)
        else:
            picks = torch.randint(len(self._group_classes), (n,), generator=generator)
            rows = []
            for p in picks.tolist():
                members = self._group_classes[p]
                order = torch.rand(len(members), generator=generator).topk(self.ways).indices
                rows.append(members[order])
            classes = torch.stack(rows)
        return EpisodeIndex(classes, images)

    def materialize(self, index: EpisodeIndex) -> EpisodeBatch:
        """Gather the pixels of ``index`` on the bank's device."""
        bank = self.bank.images
        device = bank.device
        t, n, k = len(index), self.ways, self.shots
        flat = (index.classes[..., None] * self.bank.per_class + index.images).flatten()
        # index_select on the flattened bank is a row copy: far faster than 2-D fancy indexing.
        x = bank.flatten(0, 1).index_select(0, flat.to(device))
        x = to_float(x).view(t, n, self.shots + self.queries, *bank.shape[2:])
        shape = x.shape[3:]
        classes = index.classes.to(device)
        labels = torch.arange(n, device=device)
        return EpisodeBatch(
            support_x=x[:, :, :k].reshape(t, n * k, *shape),
            support_y=labels.repeat_interleave(k).expand(t, -1),
            query_x=x[:, :, k:].reshape(t, n * self.queries, *shape),
            query_y=labels.repeat_interleave(self.queries).expand(t, -1),
            class_ids=classes,
        )

    def sample(self, n: int, generator: torch.Generator) -> EpisodeBatch:
        """Draw and gather ``n`` episodes."""
        return self.materialize(self.sample_indices(n, generator))


def _distinct(n: int, k: int, population: int, generator: torch.Generator) -> Tensor:
    """``[n, k]`` rows of ``k`` distinct values from ``range(population)``, uniformly ordered.

    With a population much larger than ``k``, draw with replacement and redraw the rows that
    hold a repeat (exact rejection sampling, and cheap: few rows repeat); otherwise take the
    top ``k`` of random keys.
    """
    if k * k > population:
        return torch.rand(n, population, generator=generator).topk(k, dim=-1).indices
    rows = torch.randint(population, (n, k), generator=generator)
    while True:
        ordered = rows.sort(dim=-1).values
        repeats = (ordered[:, 1:] == ordered[:, :-1]).any(dim=-1)
        if not bool(repeats.any()):
            return rows
        rows[repeats] = torch.randint(population, (int(repeats.sum()), k), generator=generator)


def episode_seed(seed: int, split: str, index: int) -> int:
    """A stable 63-bit seed for episode ``index`` of ``split`` under run seed ``seed``."""
    digest = hashlib.sha256(f"metarun/{seed}/{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class FixedEpisodes:
    """A fixed, seeded set of evaluation episodes.

    Episode ``i`` depends only on ``(seed, split, i)`` and the sampler's shape, never on how
    many episodes were asked for, how often validation runs, or which algorithm is evaluated.

    Args:
        sampler: the split's sampler (any :class:`TaskSampler`).
        count: number of episodes.
        seed: the run seed.
        split: split name, mixed into every episode's seed.
    """

    def __init__(self, sampler: TaskSampler, count: int, seed: int, split: str) -> None:
        if count < 1:
            raise ValueError(f"the number of {split} episodes must be at least 1; got {count}")
        self.sampler = sampler
        g = torch.Generator()
        parts = []
        for i in range(count):
            g.manual_seed(episode_seed(seed, split, i))
            parts.append(sampler.sample_indices(1, g))
        self.index = type(parts[0]).cat(parts)

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self.episode(i)

    def episode(self, i: int) -> Episode:
        return self.sampler.materialize(self.index[i:i + 1])[0]

    def digest(self) -> str:
        """SHA-256 of the episode indices: equal digests mean the same tasks."""
        h = hashlib.sha256()
        self.index.update_hash(h)
        return h.hexdigest()
