"""Training augmentation on whole batches: torchvision's pixel maths, drawn from the run's
generator (reproducible), never applied to evaluation episodes."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from metarun.data import augment
from metarun.data.augment import ImagePipeline
from metarun.data.bank import ClassImages
from metarun.data.episodes import FixedEpisodes


def _images(b: int = 6, c: int = 3, size: int = 12) -> torch.Tensor:
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(0))


def test_jitter_is_torchvisions_adjustments_per_image() -> None:
    x = _images()
    out = augment.jitter(x, torch.Generator().manual_seed(3))
    # The same draws, replayed: brightness, contrast, saturation factors for every image.
    g = torch.Generator().manual_seed(3)
    factors = [0.6 + 0.8 * torch.rand(len(x), generator=g) for _ in range(3)]
    for i, image in enumerate(x):
        expected = TF.adjust_brightness(image, float(factors[0][i]))
        expected = TF.adjust_contrast(expected, float(factors[1][i]))
        expected = TF.adjust_saturation(expected, float(factors[2][i]))
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)


def test_random_crop_is_a_padded_window_of_the_image() -> None:
    x = _images(b=20)
    out = augment.random_crop(x, 2, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(x)):
        windows = [(t, s) for t in range(5) for s in range(5)
                   if torch.equal(padded[i, :, t:t + 12, s:s + 12], out[i])]
        assert windows, i
        offsets.add(windows[0])
    assert len(offsets) > 5  # offsets differ between images of one batch


def test_flip_mirrors_about_half_the_images() -> None:
    x = _images(b=200, size=4)
    out = augment.flip(x, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
    assert all(m or torch.equal(o, i) for m, o, i in zip(mirrored, out, x, strict=True))
    assert 70 < sum(mirrored) < 130


def test_resized_crop_boxes_follow_torchvisions_rules() -> None:
    boxes = augment.crop_boxes(500, 84, 84, torch.Generator().manual_seed(0))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 84).all() and (boxes[:, 3] <= 84).all()
    area = w * h / 84**2
    assert area.min() >= 0.07 and area.max() <= 1.0
    assert area.std() > 0.1  # not one box for all


def test_the_resized_crop_is_torchvisions_bilinear_resized_crop() -> None:
    x = _images(b=8, size=24)
    out = augment.random_resized_crop(x, torch.Generator().manual_seed(5))
    boxes = augment.crop_boxes(8, 24, 24, torch.Generator().manual_seed(5)).long().tolist()
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        expected = TF.resized_crop(x[i], y0, x0, y1 - y0, x1 - x0, [24, 24], antialias=False)
        # Equal inside; at the box's edge torchvision clamps to the crop, roi_align reads on.
        torch.testing.assert_close(out[i, :, 2:-2, 2:-2], expected[:, 2:-2, 2:-2], atol=1e-5,
                                   rtol=0)


@pytest.mark.parametrize("recipe", ["metaoptnet", "feat"])
def test_training_batches_are_augmented_reproducibly_and_evaluation_never(recipe: str) -> None:
    pixels = torch.randint(0, 256, (8, 5, 3, 16, 16), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    pipeline = ImagePipeline((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), recipe, padding=2)
    plain = ClassImages(pixels, pipeline=ImagePipeline((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    bank = ClassImages(pixels, pipeline=pipeline)
    sampler, reference = bank.sampler(3, 1, 2), plain.sampler(3, 1, 2)
    first = sampler.sample(4, torch.Generator().manual_seed(7))
    again = sampler.sample(4, torch.Generator().manual_seed(7))
    torch.testing.assert_close(first.query_x, again.query_x, atol=0, rtol=0)
    index = reference.sample_indices(4, torch.Generator().manual_seed(7))
    unaugmented = reference.materialize(index)
    assert torch.equal(first.class_ids, unaugmented.class_ids)
    assert not torch.allclose(first.query_x, unaugmented.query_x)
    # Evaluation episodes gather without a generator: the same pixels as with no augmentation.
    fixed, fixed_plain = FixedEpisodes(sampler, 3, 0, "val"), FixedEpisodes(reference, 3, 0, "val")
    for a, b in zip(fixed, fixed_plain, strict=True):
        assert torch.equal(a.query_x, b.query_x)


def test_normalisation_is_per_channel() -> None:
    x = torch.ones(2, 3, 2, 2)
    out = ImagePipeline((0.5, 0.0, 1.0), (0.5, 1.0, 2.0))(x)
    assert out[:, 0].eq(1.0).all() and out[:, 1].eq(1.0).all() and out[:, 2].eq(0.0).all()
    with pytest.raises(ValueError, match="data.augment must be one of none, metaoptnet, feat"):
        ImagePipeline(augment="autoaugment")
