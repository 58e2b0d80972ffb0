"""miniImageNet (Vinyals et al. 2016), Ravi & Larochelle's split: 64 / 16 / 20 ImageNet classes
of 600 images, 84x84 RGB.

There is no public download. Two layouts are read, from ``<root>/mini-imagenet/``:

* ``pickle``: ``mini-imagenet-cache-{train,validation,test}.pkl``, each a dict with
  ``image_data`` (uint8 ``[N, 84, 84, 3]``) and ``class_dict`` (wnid -> list of indices), as
  distributed with learn2learn and many others;
* ``images``: an ``images/`` folder holding the files the split CSVs name
  (``n0153282900000005.jpg``...), of any size, resized once to 84x84 (Lanczos).

Either is decoded once into the memory-mappable cache (:mod:`metarun.data.cache`); the pickles
are read with the restricted unpickler. The class lists are the shipped CSVs
(``splits/mini-imagenet``); the classes found must be exactly those.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from metarun.data.cache import BankCache, Layout, SplitImages
from metarun.data.formats import csv_rows, fingerprint, read_pickle
from metarun.data.imageset import ImageDataset, to_pixels
from metarun.errors import CorruptDatasetError, DatasetNotFoundError
from metarun.types import Split

log = logging.getLogger(__name__)

PICKLES = {Split.TRAIN: "mini-imagenet-cache-train.pkl",
           Split.VAL: "mini-imagenet-cache-validation.pkl",
           Split.TEST: "mini-imagenet-cache-test.pkl"}
_FIX = ("replace it with a good copy of that layout (check its size and checksum against "
        "your source), or use the images/ layout")


def split_files(split: Split) -> dict[str, list[str]]:
    """The shipped CSV of ``split``: class wnid -> its image file names, in file order."""
    files: dict[str, list[str]] = defaultdict(list)
    for name, wnid in csv_rows("mini-imagenet", split.value, header=True):
        files[wnid].append(name)
    return dict(files)


class MiniImageNet(ImageDataset):
    """miniImageNet from either layout (see the module docstring)."""

    folder = "mini-imagenet"
    channels, size = 3, 84

    def read(self) -> dict[Split, SplitImages]:
        layout = self._layout()
        sources = ([self.root / f for f in PICKLES.values()] if layout == "pickle"
                   else sorted((self.root / "images").iterdir()))
        cache = BankCache(self.cache_dir / "mini-imagenet-84px.npy",
                          {"layout": layout, "files": fingerprint(sources)}, self.input_shape)
        cached = cache.read(self.memmap)
        if cached is None:
            log.info("decoding miniImageNet (%s layout) from %s into %s (once)", layout,
                     self.root, cache.path)
            cached = (self._from_pickles(cache) if layout == "pickle"
                      else self._from_images(cache))
        return {Split(s): part for s, part in cached.items()}

    def _layout(self) -> str:
        if all((self.root / f).is_file() for f in PICKLES.values()):
            return "pickle"
        if (self.root / "images").is_dir():
            return "images"
        raise DatasetNotFoundError(
            f"miniImageNet is not in {self.root}/ (it has no public download). Put there "
            f"either the three pickles {', '.join(PICKLES.values())} (dicts of image_data "
            "uint8 Nx84x84x3 and class_dict) or an images/ folder of the JPEGs named in "
            "Ravi & Larochelle's train/val/test CSVs; or point data.root (or METARUN_DATA) at "
            "the folder that holds mini-imagenet/.")

    def _from_pickles(self, cache: BankCache) -> dict[str, SplitImages]:
        blobs = {}
        for split, name in PICKLES.items():
            path = self.root / name
            blob = read_pickle(path, _FIX)
            try:
                data, classes = blob["image_data"], dict(blob["class_dict"])
            except (TypeError, KeyError) as e:
                raise CorruptDatasetError(f"{path} has no image_data and class_dict ({e}); "
                                          f"{_FIX}") from None
            if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and
                    data.shape[1:] == (84, 84, 3)):
                raise CorruptDatasetError(f"{path}: image_data must be uint8 Nx84x84x3; got "
                                          f"{getattr(data, 'dtype', type(data))} "
                                          f"{getattr(data, 'shape', '')}; {_FIX}")
            _check_classes(path, set(classes), set(split_files(split)))
            wnids = sorted(classes)
            blobs[split.value] = (data, [np.asarray(classes[w], dtype=np.int64)
                                         for w in wnids], wnids)
        layout: Layout = {s: (w, [len(i) for i in idx]) for s, (_, idx, w) in blobs.items()}

        def fill(split: str, out: np.ndarray) -> None:
            data, idx, _ = blobs[split]
            out[:] = data[np.concatenate(idx)].transpose(0, 3, 1, 2)

        return cache.build(layout, fill, self.memmap)

    def _from_images(self, cache: BankCache) -> dict[str, SplitImages]:
        folder = self.root / "images"
        files = {split.value: split_files(split) for split in Split}
        missing = [n for split in files.values() for names in split.values() for n in names
                   if not (folder / n).is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"{folder} lacks {len(missing)} of the images the split CSVs name (first: "
                f"{missing[0]}); it must hold all of them")
        layout: Layout = {s: (sorted(c), [len(c[w]) for w in sorted(c)])
                          for s, c in files.items()}
        total = sum(sum(k) for _, k in layout.values())
        done = [0]

        def fill(split: str, out: np.ndarray) -> None:
            names = [n for w in sorted(files[split]) for n in files[split][w]]
            for i, name in enumerate(names):
                out[i] = _decode(folder / name, self.size)
                done[0] += 1
                if done[0] % 5000 == 0:
                    log.info("miniImageNet: decoded %d of %d images", done[0], total)

        return cache.build(layout, fill, self.memmap)


def _decode(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return to_pixels(image, size, 3)
    except (UnidentifiedImageError, OSError) as e:
        raise CorruptDatasetError(f"{path} is not a readable image ({e}); replace it") from None


def _check_classes(path: Path, found: set[str], expected: set[str]) -> None:
    if found != expected:
        odd = sorted(found - expected) or sorted(expected - found)
        raise CorruptDatasetError(
            f"{path} holds {len(found)} classes, not the {len(expected)} of its split in Ravi "
            f"& Larochelle's CSVs (e.g. {odd[0]} differs); it is not that split's file")
