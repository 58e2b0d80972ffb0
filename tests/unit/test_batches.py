"""Non-episodic training samplers: verification pairs and labelled images."""

from __future__ import annotations

import pytest
import torch

from metarun.data.batches import ImageSampler, PairSampler
from metarun.data.episodes import ClassImages

CLASSES, PER_CLASS = 12, 6


def _bank(first_class: int = 0) -> ClassImages:
    """Every pixel of image j of class c holds the value ``c * PER_CLASS + j`` (global ids
    from ``first_class``), so a drawn image says where it came from."""
    ids = (torch.arange(CLASSES)[:, None] + first_class) * PER_CLASS + torch.arange(PER_CLASS)
    return ClassImages(ids.to(torch.uint8)[:, :, None, None, None].expand(-1, -1, 1, 2, 2)
                       .contiguous())


def _ids(images: torch.Tensor) -> torch.Tensor:
    return (images[:, 0, 0, 0] * 255).round().long()


@pytest.mark.parametrize(("pairs", "fraction", "same"), [(8, 0.5, 4), (8, 0.25, 2),
                                                         (5, 1.0, 5), (4, 0.0, 0)])
def test_pairs_have_the_configured_ratio_from_the_split_only(pairs: int, fraction: float,
                                                             same: int) -> None:
    train = _bank(first_class=10)  # a split whose global ids are 10..21
    batch = PairSampler(train, pairs, fraction).sample(3, torch.Generator().manual_seed(0))
    assert batch.first.shape == (3 * pairs, 1, 2, 2) and batch.same.shape == (3 * pairs,)
    assert batch.same.view(3, pairs).sum(1).tolist() == [same] * 3
    first, second = _ids(batch.first), _ids(batch.second)
    # Every image is one of this split's images, and its class is the one recorded.
    for ids, cls in ((first, batch.classes[:, 0]), (second, batch.classes[:, 1])):
        assert ((ids // PER_CLASS - 10) == cls).all()
        assert ((cls >= 0) & (cls < CLASSES)).all()
    is_same = batch.same.bool()
    assert torch.equal(batch.classes[:, 0] == batch.classes[:, 1], is_same)
    assert (first[is_same] != second[is_same]).all()  # never an image paired with itself


def test_pairs_are_seeded_like_episodes() -> None:
    sampler = PairSampler(_bank(), 16, 0.5)
    a = sampler.sample(2, torch.Generator().manual_seed(3))
    b = sampler.sample(2, torch.Generator().manual_seed(3))
    c = sampler.sample(2, torch.Generator().manual_seed(4))
    assert torch.equal(a.first, b.first) and torch.equal(a.second, b.second)
    assert not torch.equal(a.classes, c.classes)


@pytest.mark.parametrize(("kwargs", "key"), [({"pairs": 0, "same_fraction": 0.5}, "algo.pairs"),
                                             ({"pairs": 4, "same_fraction": 1.5},
                                              "algo.same_fraction")])
def test_pair_sampler_rejects_bad_settings(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        PairSampler(_bank(), **kwargs)


def test_labelled_images_carry_their_class() -> None:
    batch = ImageSampler(_bank(), 10).sample(3, torch.Generator().manual_seed(0))
    assert batch.x.shape == (30, 1, 2, 2)
    assert torch.equal(_ids(batch.x) // PER_CLASS, batch.y)
    assert len(set(batch.y.tolist())) > 1
    with pytest.raises(ValueError, match="algo.batch_size"):
        ImageSampler(_bank(), 0)


def _ragged(counts: list[int]) -> ClassImages:
    """A flat bank whose image i holds the value i (its global position)."""
    total = sum(counts)
    pixels = torch.arange(total).to(torch.uint8)[:, None, None, None].expand(-1, 1, 2, 2)
    return ClassImages(pixels.contiguous(), counts=torch.tensor(counts))


def test_ragged_banks_draw_only_their_own_images() -> None:
    counts = [2, 6, 3, 9]
    bank = _ragged(counts)
    assert (bank.per_class, bank.max_count, bank.uniform) == (2, 9, False)
    starts = [0, 2, 8, 11]
    g = torch.Generator().manual_seed(0)
    pairs = PairSampler(bank, 8, 0.5).sample(50, g)
    for images, cls in ((pairs.first, pairs.classes[:, 0]), (pairs.second, pairs.classes[:, 1])):
        ids = _ids(images)
        lo = torch.tensor(starts)[cls]
        assert ((ids >= lo) & (ids < lo + torch.tensor(counts)[cls])).all()
    labelled = ImageSampler(bank, 100).sample(40, g)
    ids = _ids(labelled.x)
    assert torch.equal(torch.bucketize(ids, torch.tensor(starts[1:]), right=True), labelled.y)
    # every image equally likely: the classes come up in proportion to their sizes
    share = torch.bincount(labelled.y, minlength=4).float() / len(labelled.y)
    assert torch.allclose(share, torch.tensor(counts) / sum(counts), atol=0.03)
    assert set(ids.tolist()) == set(range(sum(counts)))


def test_banks_refuse_counts_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="sum to the images"):
        ClassImages(torch.zeros(5, 1, 2, 2, dtype=torch.uint8), counts=torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="with counts"):
        ClassImages(torch.zeros(5, 1, 2, 2, dtype=torch.uint8))
    grid = ClassImages(torch.zeros(3, 4, 1, 2, 2, dtype=torch.uint8))
    assert grid.to("cpu").class_counts.tolist() == [4, 4, 4]
