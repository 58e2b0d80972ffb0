"""Invariants of episode sampling, on synthetic banks and on real Omniglot."""

from __future__ import annotations

import pytest
import torch

from metarun.data.episodes import ClassImages, EpisodeSampler, FixedEpisodes, episode_seed
from metarun.types import Split


def _bank(classes: int = 30, per_class: int = 20, groups: torch.Tensor | None = None):
    # Pixel value encodes (class, image) so we can read back exactly which image was drawn.
    ids = torch.arange(classes * per_class).reshape(classes, per_class)
    images = torch.zeros(classes, per_class, 1, 2, 2, dtype=torch.uint8)
    cls, img = ids // per_class, ids % per_class
    images[:, :, 0, 0, 0] = (cls % 256).to(torch.uint8)
    images[:, :, 0, 0, 1] = (cls // 256).to(torch.uint8)
    images[:, :, 0, 1, 0] = img.to(torch.uint8)
    return ClassImages(images, groups)


def _decode(x: torch.Tensor) -> list[tuple[int, int]]:
    pixels = (x * 255).round().long()
    return [(int(p[0, 0, 0]) + 256 * int(p[0, 0, 1]), int(p[0, 1, 0])) for p in pixels]


@pytest.mark.parametrize("classes", [30, 7, 1000])
def test_episode_invariants(classes: int) -> None:
    sampler = EpisodeSampler(_bank(classes), ways=5, shots=2, queries=3)
    batch = sampler.sample(50, torch.Generator().manual_seed(1))
    assert batch.support_x.shape == (50, 10, 1, 2, 2)
    assert batch.query_x.shape == (50, 15, 1, 2, 2)
    for ep in batch:
        assert len(set(ep.class_ids.tolist())) == 5  # N distinct classes
        assert ep.support_y.tolist() == [i for i in range(5) for _ in range(2)]
        assert sorted(ep.query_y.tolist()) == [i for i in range(5) for _ in range(3)]
        support, query = _decode(ep.support_x), _decode(ep.query_x)
        assert not set(support) & set(query)  # disjoint support and query images
        assert len(set(support)) == 10 and len(set(query)) == 15
        labels = ep.support_y.tolist() + ep.query_y.tolist()
        for (cls, _), label in zip(support + query, labels, strict=True):
            assert cls == int(ep.class_ids[label])  # label i is class_ids[i]


def test_labels_map_to_classes_in_random_order() -> None:
    sampler = EpisodeSampler(_bank(6), ways=5, shots=1, queries=1)
    batch = sampler.sample(200, torch.Generator().manual_seed(0))
    # Label 0 is not tied to the smallest (or any fixed) class id.
    first = batch.class_ids[:, 0]
    assert len(set(first.tolist())) == 6
    assert (batch.class_ids[:, 0] > batch.class_ids[:, 1]).any()
    assert (batch.class_ids[:, 0] < batch.class_ids[:, 1]).any()


def test_class_draws_are_uniform() -> None:
    sampler = EpisodeSampler(_bank(100), ways=5, shots=1, queries=1)
    index = sampler.sample_indices(20000, torch.Generator().manual_seed(0))
    counts = torch.bincount(index.classes.flatten(), minlength=100).float()
    expected = 20000 * 5 / 100
    assert counts.min() > 0.85 * expected and counts.max() < 1.15 * expected


def test_same_generator_seed_same_episodes() -> None:
    sampler = EpisodeSampler(_bank(), ways=5, shots=1, queries=2)
    a = sampler.sample(4, torch.Generator().manual_seed(3))
    b = sampler.sample(4, torch.Generator().manual_seed(3))
    c = sampler.sample(4, torch.Generator().manual_seed(4))
    assert torch.equal(a.query_x, b.query_x) and torch.equal(a.class_ids, b.class_ids)
    assert not torch.equal(a.class_ids, c.class_ids)


def test_sampling_ignores_global_rng() -> None:
    sampler = EpisodeSampler(_bank(), ways=5, shots=1, queries=2)
    torch.manual_seed(0)
    a = sampler.sample(4, torch.Generator().manual_seed(3))
    torch.manual_seed(123)
    torch.rand(10)
    b = sampler.sample(4, torch.Generator().manual_seed(3))
    assert torch.equal(a.class_ids, b.class_ids)


def test_within_group_episodes_stay_in_one_group() -> None:
    groups = torch.arange(30) // 6  # five groups of six classes
    sampler = EpisodeSampler(_bank(30, groups=groups), ways=5, shots=1, queries=1)
    index = sampler.sample_indices(300, torch.Generator().manual_seed(0))
    per_episode = groups[index.classes]
    assert (per_episode == per_episode[:, :1]).all()
    assert len(set(per_episode[:, 0].tolist())) == 5


def test_fixed_episodes_depend_only_on_seed_split_index() -> None:
    sampler = EpisodeSampler(_bank(), ways=5, shots=1, queries=2)
    a = FixedEpisodes(sampler, 10, seed=0, split="test")
    b = FixedEpisodes(sampler, 25, seed=0, split="test")
    c = FixedEpisodes(sampler, 10, seed=0, split="val")
    d = FixedEpisodes(sampler, 10, seed=1, split="test")
    assert torch.equal(a.index.classes, b.index.classes[:10])
    assert a.digest() == FixedEpisodes(sampler, 10, seed=0, split="test").digest()
    assert a.digest() != c.digest() and a.digest() != d.digest()
    ep = a.episode(3)
    assert torch.equal(ep.class_ids, a.index.classes[3])
    assert episode_seed(0, "test", 3) != episode_seed(0, "test", 4)


@pytest.mark.parametrize(
    ("ways", "shots", "queries", "message"),
    [
        (31, 1, 1, "task.ways = 31 exceeds the 30 classes"),
        (5, 10, 11, "exceeds the 20 images per class"),
        (1, 1, 1, "task.ways must be at least 2"),
        (5, 0, 1, "at least 1"),
    ],
)
def test_impossible_tasks_are_rejected(ways: int, shots: int, queries: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(_bank(), ways, shots, queries)


def test_errors_name_the_keys_that_chose_the_shape() -> None:
    with pytest.raises(ValueError, match=r"^eval.ways = 31 exceeds the 30 classes"):
        _bank().sampler(31, 1, 1, setting="eval")
    with pytest.raises(ValueError, match=r"^eval.shots \+ eval.queries = 21 exceeds"):
        _bank().sampler(5, 10, 11, setting="eval")


def test_omniglot_episode(omniglot) -> None:  # type: ignore[no-untyped-def]
    sampler = EpisodeSampler(omniglot[Split.TRAIN], ways=20, shots=5, queries=5)
    ep = sampler.sample(1, torch.Generator().manual_seed(0))[0]
    assert ep.support_x.shape == (100, 1, 28, 28) and ep.support_x.dtype == torch.float32
    assert 0.0 <= float(ep.support_x.min()) and float(ep.support_x.max()) <= 1.0
    # Strokes are bright on a dark background: most pixels are near zero.
    assert float((ep.query_x < 0.1).float().mean()) > 0.6
    flat = torch.cat([ep.support_x, ep.query_x]).flatten(1)
    assert len({tuple(r.tolist()) for r in flat}) == 200  # 200 distinct images
