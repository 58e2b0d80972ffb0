"""Tensor-native episode sampling.

A split is a :class:`~metarun.data.bank.ClassImages` bank of uint8 images; an episode is a draw
of indices from a ``torch.Generator`` (on the CPU, so episodes are the same whatever the device)
followed by one gather. Nothing here decodes images or reads the global RNG.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from metarun.data.bank import ClassImages, to_float
from metarun.types import Episode, EpisodeBatch, TaskIndex, TaskSampler

__all__ = ["ClassImages", "EpisodeIndex", "EpisodeSampler", "FixedEpisodes", "episode_seed",
           "to_float"]


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
        # Random keys + topk: a uniform ordered subset without replacement, vectorised (keys
        # past a smaller class's last image are masked out by ``draw``).
        keys = torch.rand(n, self.ways, self.bank.max_count, generator=generator)
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
        return EpisodeIndex(classes, self.bank.draw(keys, classes, n_img))

    def materialize(self, index: EpisodeIndex,
                    generator: torch.Generator | None = None) -> EpisodeBatch:
        """Gather the pixels of ``index`` on the bank's device (augmented, when the bank's
        pipeline augments, with ``generator``: training passes its own, evaluation none)."""
        t, n, k, m = len(index), self.ways, self.shots, self.shots + self.queries
        x = self.bank.gather(index.classes[..., None].expand(-1, -1, m).flatten(),
                             index.images.flatten(), generator)
        x = x.view(t, n, m, *x.shape[1:])
        shape, device = x.shape[3:], x.device
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
        """Draw and gather ``n`` training episodes (augmented if the bank's pipeline says)."""
        return self.materialize(self.sample_indices(n, generator), generator)


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
