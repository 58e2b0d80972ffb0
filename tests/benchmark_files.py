"""Small files in exactly the formats of the benchmarks whose images are not on this machine
(CIFAR-100, CIFAR-10, miniImageNet, tieredImageNet): real class names from the shipped split
lists, real shapes and dtypes, a few images per class. Every image's pixels encode its class
and its number within the class, so a test can read back which image it got."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from metarun.data.formats import csv_rows, json_list

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


def cifar100_classes() -> tuple[list[str], list[str], dict[str, str]]:
    """CIFAR-100's fine and coarse names (sorted, as in its meta file) and fine -> coarse,
    from the shipped CIFAR-FS lists (which hold every class once, with its superclass)."""
    pairs = [p for s in ("train", "val", "test") for p in json_list("cifar-fs", s)]
    coarse_of = {fine: coarse for coarse, fine in pairs}
    return sorted(coarse_of), sorted(set(coarse_of.values())), coarse_of


def tagged(label: int, number: int, shape: tuple[int, ...]) -> np.ndarray:
    """An image whose first two pixels hold its class (low, high byte) and the third its
    number within the class."""
    image = np.full(shape, 7, dtype=np.uint8)
    flat = image.reshape(-1)
    flat[0], flat[1], flat[2] = label % 256, label // 256, number
    return image


def _dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar100(root: Path, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` as in the official archive."""
    fine, coarse, coarse_of = cifar100_classes()
    folder = root / "cifar-100-python"
    _dump(folder / "meta", {"fine_label_names": fine, "coarse_label_names": coarse})
    for name, per, offset in (("train", train_per_class, 0), ("test", test_per_class,
                                                              train_per_class)):
        labels = [c for c in range(100) for _ in range(per)]
        data = np.stack([tagged(c, offset + i % per, (3072,)) for i, c in enumerate(labels)])
        _dump(folder / name, {
            "filenames": [f"img_{i}.png" for i in range(len(labels))], "batch_label": name,
            "fine_labels": labels,
            "coarse_labels": [coarse.index(coarse_of[fine[c]]) for c in labels],
            "data": data})
    return folder


def write_cifar10(root: Path, per_batch: int = 1) -> Path:
    """``root/cifar-10-batches-py/`` (five training batches, a test batch, the meta file)."""
    folder = root / "cifar-10-batches-py"
    _dump(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch":
                                    10 * per_batch, "num_vis": 3072})
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        labels = [c for c in range(10) for _ in range(per_batch)]
        data = np.stack([tagged(c, b * per_batch + i % per_batch, (3072,))
                         for i, c in enumerate(labels)])
        _dump(folder / name, {"batch_label": name, "labels": labels, "data": data,
                              "filenames": [f"{name}_{i}.png" for i in range(len(labels))]})
    return folder


def mini_classes(split: str) -> list[str]:
    return sorted({wnid for _, wnid in csv_rows("mini-imagenet", split, header=True)})


def write_mini_pickles(root: Path, per_class: int = 3) -> Path:
    """``root/mini-imagenet/mini-imagenet-cache-{train,validation,test}.pkl``."""
    folder = root / "mini-imagenet"
    label = 0
    for split, suffix in (("train", "train"), ("val", "validation"), ("test", "test")):
        images, class_dict = [], {}
        for wnid in mini_classes(split):
            class_dict[wnid] = list(range(len(images), len(images) + per_class))
            images += [tagged(label, i, (84, 84, 3)) for i in range(per_class)]
            label += 1
        _dump(folder / f"mini-imagenet-cache-{suffix}.pkl",
              {"image_data": np.stack(images), "class_dict": class_dict})
    return folder


def tiered_classes(split: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in csv_rows("tiered-imagenet", split, header=False)]


def png(image: np.ndarray) -> np.ndarray:
    """PNG bytes of an ``[H, W, 3]`` image as a uint8 array (Ren et al.'s storage)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def write_tiered(root: Path, layout: str, per_class: tuple[int, int] = (2, 3)) -> Path:
    """``root/tiered-imagenet/`` in the ``png`` or ``npz`` layout. Class ``i`` of a split has
    ``per_class[i % 2]`` images, stored in a shuffled order (as the real files are not sorted
    by class)."""
    folder = root / "tiered-imagenet"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    label_base = 0
    for split in ("train", "val", "test"):
        classes = tiered_classes(split)
        categories = sorted({c for _, c in classes})
        labels = np.array([i for i in range(len(classes)) for _ in range(per_class[i % 2])])
        numbers = np.array([n for i in range(len(classes)) for n in range(per_class[i % 2])])
        order = rng.permutation(len(labels))
        labels, numbers = labels[order], numbers[order]
        images = [tagged(label_base + int(c), int(n), (84, 84, 3))
                  for c, n in zip(labels, numbers, strict=True)]
        _dump(folder / f"{split}_labels.pkl", {
            "label_specific": labels,
            "label_general": np.array([categories.index(classes[c][1]) for c in labels]),
            "label_specific_str": [w for w, _ in classes], "label_general_str": categories})
        if layout == "png":
            _dump(folder / f"{split}_images_png.pkl", [png(im) for im in images])
        else:
            np.savez(folder / f"{split}_images.npz", images=np.stack(images))
        label_base += len(classes)
    return folder


def read_tag(image: np.ndarray, stored: str) -> tuple[int, int]:
    """``(class, number)`` of a :func:`tagged` image read back as ``[C, H, W]`` uint8; it was
    stored channels-last (``"hwc"``: the ImageNet files) or first (``"chw"``: CIFAR)."""
    flat = (image.transpose(1, 2, 0) if stored == "hwc" else image).reshape(-1)
    return int(flat[0]) + 256 * int(flat[1]), int(flat[2])
