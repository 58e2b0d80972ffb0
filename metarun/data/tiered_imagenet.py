"""tieredImageNet (Ren et al. 2018): 608 ImageNet classes in 34 categories, split by category
into 351 / 97 / 160 classes (20 / 6 / 8 categories), 779,165 images of 84x84 RGB; classes
differ in size.

There is no public download. Two layouts are read, from ``<root>/tiered-imagenet/``, both with
the labels of Ren et al.'s release, ``{train,val,test}_labels.pkl`` (a dict with
``label_specific``: each image's class index, and ``label_specific_str``: the class wnids):

* ``png``: Ren et al.'s ``{split}_images_png.pkl``, a list of PNG-encoded images;
* ``npz``: ``{split}_images.npz`` with an ``images`` array uint8 ``[N, 84, 84, 3]``, the layout
  MetaOptNet and FEAT load. A labels file without ``label_specific_str`` (only ``labels``) is
  taken to number the classes in the order of the shipped split list, as is one whose class
names are not the lists' wnids (with a warning).

Decoded once into the memory-mapped cache (:mod:`metarun.data.cache`; about 16.5 GB), written
as it is decoded: training opens it memory-mapped (``data.memmap``, on by default) and gathers
only the images each episode uses, so resident memory stays far below the cache's size. The
``npz`` array is streamed from the archive in chunks; the ``png`` pickle is one Python object
and must fit in memory while it is decoded (once). Pickles are read with the restricted
unpickler; the classes found must be exactly the shipped lists (``splits/tiered-imagenet``).
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from metarun.data.cache import BankCache, SplitImages
from metarun.data.formats import check_head, csv_rows, fingerprint, read_npy_header, read_pickle
from metarun.data.imageset import ImageDataset, to_pixels
from metarun.errors import CorruptDatasetError, DatasetNotFoundError
from metarun.types import Split

log = logging.getLogger(__name__)

_FIX = "replace it with a good copy of that layout (check its size against your source)"
_CHUNK = 2048  # images decoded (or streamed from the npz) at a time


def split_classes(split: Split) -> list[str]:
    """The shipped list of ``split``'s class wnids, in file order."""
    return [row[0] for row in csv_rows("tiered-imagenet", split.value, header=False)]


class TieredImageNet(ImageDataset):
    """tieredImageNet from either layout (see the module docstring)."""

    folder = "tiered-imagenet"
    channels, size = 3, 84

    def read(self) -> dict[Split, SplitImages]:
        layout = self._layout()
        sources = [self.root / f"{s.value}_labels.pkl" for s in Split] + [
            self._images_file(s, layout) for s in Split]
        cache = BankCache(self.cache_dir / "tiered-imagenet-84px.npy",
                          {"layout": layout, "files": fingerprint(sources)}, self.input_shape)
        cached = cache.read(self.memmap)
        if cached is None:
            log.info("decoding tieredImageNet (%s layout) from %s into %s (once; about "
                     "16.5 GB)", layout, self.root, cache.path)
            cached = self._build(cache, layout)
        return {Split(s): part for s, part in cached.items()}

    def _images_file(self, split: Split, layout: str) -> Path:
        name = f"{split.value}_images_png.pkl" if layout == "png" else f"{split.value}_images.npz"
        return self.root / name

    def _layout(self) -> str:
        for layout in ("png", "npz"):
            if all(self._images_file(s, layout).is_file() and
                   (self.root / f"{s.value}_labels.pkl").is_file() for s in Split):
                return layout
        raise DatasetNotFoundError(
            f"tieredImageNet is not in {self.root}/ (it has no public download). Put there "
            "{train,val,test}_labels.pkl with either {split}_images_png.pkl (Ren et al.'s "
            "release) or {split}_images.npz (MetaOptNet/FEAT's); or point data.root (or "
            "METARUN_DATA) at the folder that holds tiered-imagenet/.")

    def _build(self, cache: BankCache, layout: str) -> dict[str, SplitImages]:
        labels = {s.value: self._labels(s) for s in Split}
        plan = {}
        for split, (label, names) in labels.items():
            order = np.argsort(label, kind="stable")
            counts = np.bincount(label, minlength=len(names)).tolist()
            position = np.empty_like(order)
            position[order] = np.arange(len(order))  # where source image i goes
            plan[split] = (names, counts, position)

        def fill(split: str, out: np.ndarray) -> None:
            position = plan[split][2]
            start = 0
            for chunk in self._chunks(Split(split), layout, len(position)):
                out[position[start:start + len(chunk)]] = chunk
                start += len(chunk)
                log.info("tieredImageNet %s: %d of %d images", split, start, len(position))

        return cache.build({s: (p[0], p[1]) for s, p in plan.items()}, fill, self.memmap)

    def _labels(self, split: Split) -> tuple[np.ndarray, list[str]]:
        path = self.root / f"{split.value}_labels.pkl"
        blob = read_pickle(path, _FIX)
        expected = split_classes(split)
        try:
            label = np.asarray(blob["label_specific" if "label_specific" in blob else "labels"],
                               dtype=np.int64)
            names = [str(n) for n in blob.get("label_specific_str", expected)]
        except (TypeError, KeyError, ValueError) as e:
            raise CorruptDatasetError(f"{path} has no label_specific (or labels) array ({e}); "
                                      f"{_FIX}") from None
        if len(names) == len(expected) and sorted(names) != sorted(expected):
            log.warning("%s names its classes %s...; not wnids, so they are taken to be the "
                        "shipped split list's classes in its order", path, names[:2])
            names = expected
        if sorted(names) != sorted(expected):
            raise CorruptDatasetError(
                f"{path} names {len(names)} classes, not the {len(expected)} of the "
                f"tieredImageNet {split.value} split; it is not that split's labels file")
        if label.ndim != 1 or (len(label) and (label.min() < 0 or label.max() >= len(names))):
            raise CorruptDatasetError(f"{path}: labels must index its {len(names)} classes")
        return label, names

    def _chunks(self, split: Split, layout: str, count: int) -> Iterator[np.ndarray]:
        path = self._images_file(split, layout)
        chunks = _png_chunks(path) if layout == "png" else _npz_chunks(path)
        seen = 0
        for chunk in chunks:
            seen += len(chunk)
            yield chunk
        if seen != count:
            raise CorruptDatasetError(f"{path} holds {seen} images; its labels file has "
                                      f"{count}; {_FIX}")


def _png_chunks(path: Path) -> Iterator[np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    encoded: Any = read_pickle(path, _FIX)
    for start in range(0, len(encoded), _CHUNK):
        out = []
        for i, item in enumerate(encoded[start:start + _CHUNK], start):
            try:
                with Image.open(io.BytesIO(np.asarray(item, dtype=np.uint8).tobytes())) as im:
                    out.append(to_pixels(im, 84, 3))
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise CorruptDatasetError(f"{path}: image {i} is not a readable PNG ({e}); "
                                          f"{_FIX}") from None
        yield np.stack(out)


def _npz_chunks(path: Path) -> Iterator[np.ndarray]:
    """The ``images`` array of an ``.npz``, ``[n, 3, 84, 84]`` chunks, streamed."""
    check_head(path, _FIX)
    try:
        with zipfile.ZipFile(path) as z, z.open("images.npy") as member:
            shape, fortran, dtype = read_npy_header(member)
            if dtype != np.uint8 or fortran or tuple(shape[1:]) != (84, 84, 3):
                raise CorruptDatasetError(f"{path}: images must be uint8 Nx84x84x3 (C order); "
                                          f"got {dtype} {shape}; {_FIX}")
            per = 84 * 84 * 3
            for start in range(0, shape[0], _CHUNK):
                n = min(_CHUNK, shape[0] - start)
                raw = member.read(n * per)
                if len(raw) != n * per:
                    raise EOFError(f"the array ends after {start + len(raw) // per} images")
                yield np.frombuffer(raw, np.uint8).reshape(n, 84, 84, 3).transpose(0, 3, 1, 2)
    except (zipfile.BadZipFile, KeyError, EOFError, ValueError) as e:
        raise CorruptDatasetError(f"{path} is not a complete .npz with an images array "
                                  f"({type(e).__name__}: {e}); {_FIX}") from None
