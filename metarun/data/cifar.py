"""The CIFAR benchmarks: CIFAR-FS and FC100 (from CIFAR-100) and CIFAR-10, 32x32 RGB.

* ``CifarFS`` (Bertinetto et al. 2019): 64 / 16 / 20 of CIFAR-100's fine classes.
* ``FC100`` (Oreshkin et al. 2018): 12 / 4 / 4 of its 20 superclasses, so the 60 / 20 / 20
  fine classes of a split share no superclass with another split's.
* ``Cifar10``: the ten classes, split as :data:`~metarun.data.imageset.TEN_CLASS_SPLIT` says.

For CIFAR-FS and FC100 a class has all its 600 images (the official train and test files
merged). Files: torchvision's layout, ``<root>/cifar-100-python/{train,test,meta}`` and
``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``, downloaded as the
official archive with torchvision's URL and MD5. The batches are Python pickles, read with the
restricted unpickler (:func:`metarun.data.formats.read_pickle`); a file that holds the official
number of images is checked against torchvision's MD5 for it. Reading takes a few seconds: there
is no separate cache.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from metarun.data.cache import SplitImages
from metarun.data.download import download
from metarun.data.formats import check_md5, json_list, read_pickle
from metarun.data.imageset import ImageDataset, by_class, ten_class_splits
from metarun.errors import CorruptDatasetError, DatasetNotFoundError
from metarun.types import Split

#: Images in each official file: a file that holds this many must match torchvision's MD5.
OFFICIAL_IMAGES = {"train": 50000, "test": 10000, "test_batch": 10000,
                   **{f"data_batch_{i}": 10000 for i in range(1, 6)}}


class _Cifar(ImageDataset):
    channels, size = 3, 32
    archive = ""  # torchvision's dataset class with the url, archive and file MD5s

    def _torchvision(self) -> Any:
        from torchvision import datasets

        return getattr(datasets, self.archive)

    def _fix(self) -> str:
        tv = self._torchvision()
        return (f"delete it and let data.download fetch {tv.url} (MD5 {tv.tgz_md5}), or "
                f"extract that archive into {self.root.parent}/")

    def _file(self, name: str) -> Any:
        """One of the archive's pickles, located (or downloaded), checked and read."""
        path = self.root / name
        if not path.is_file():
            self._fetch(path)
        content = read_pickle(path, self._fix())
        if not isinstance(content, dict):
            raise CorruptDatasetError(f"{path} holds a {type(content).__name__}, not CIFAR's "
                                      f"dict of arrays; {self._fix()}")
        if len(content.get("data", ())) == OFFICIAL_IMAGES.get(name):
            tv = self._torchvision()
            check_md5(path, dict(tv.train_list + tv.test_list)[name], self._fix())
        return content

    def _fetch(self, missing: Path) -> None:
        tv = self._torchvision()
        if not self.download:
            raise DatasetNotFoundError(
                f"{missing} is missing and data.download is false. Extract {tv.url} into "
                f"{self.root.parent}/ (it makes {self.folder}/), or point data.root (or "
                "METARUN_DATA) at a folder that holds it.")
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / tv.filename
            try:
                download(tv.url, archive, tv.tgz_md5)
            except OSError as e:
                raise DatasetNotFoundError(f"{missing} is missing and downloading {tv.url} "
                                           f"failed ({e}); extract it into "
                                           f"{self.root.parent}/ by hand") from None
            with tarfile.open(archive) as tar:
                extracted = Path(tmp) / "x"
                tar.extractall(extracted, **_safe())
                self.root.parent.mkdir(parents=True, exist_ok=True)
                (extracted / self.folder).replace(self.root)

    def _images(self, batch: dict[str, Any], path: str, labels: str) -> tuple[np.ndarray,
                                                                                np.ndarray]:
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            y = np.asarray(batch[labels], dtype=np.int64)
            images = data.reshape(len(data), 3, 32, 32)
        except (KeyError, ValueError) as e:
            raise CorruptDatasetError(f"{self.root / path} is not a CIFAR batch ({type(e).__name__}"
                                      f": {e}); {self._fix()}") from None
        if len(y) != len(images):
            raise CorruptDatasetError(f"{self.root / path} holds {len(images)} images and "
                                      f"{len(y)} labels; {self._fix()}")
        return images, y


def _safe() -> dict[str, Any]:
    """tarfile's ``data`` filter where this Python has it (no absolute paths, no links out)."""
    return {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


class _Cifar100(_Cifar):
    folder, archive = "cifar-100-python", "CIFAR100"
    benchmark = ""  # the shipped split lists' folder

    def _classes(self, split: Split, fine: list[str], coarse: list[str],
                 fine_to_coarse: dict[int, int]) -> list[int]:
        raise NotImplementedError

    def read(self) -> dict[Split, SplitImages]:
        meta = self._file("meta")
        fine, coarse = list(meta["fine_label_names"]), list(meta["coarse_label_names"])
        parts = [(self._images(b, n, "fine_labels"), np.asarray(b["coarse_labels"]))
                 for n in ("train", "test") for b in [self._file(n)]]
        images = np.concatenate([p[0][0] for p in parts])
        labels = np.concatenate([p[0][1] for p in parts])
        fine_to_coarse = {int(f): int(c) for f, c in
                          zip(labels, np.concatenate([p[1] for p in parts]), strict=True)}
        out = {}
        for split in Split:
            classes = self._classes(split, fine, coarse, fine_to_coarse)
            order, counts = by_class(labels, classes)
            out[split] = SplitImages(images[order], [fine[c] for c in classes], counts)
        return out


class CifarFS(_Cifar100):
    """CIFAR-FS: the shipped lists of fine classes (``splits/cifar-fs``)."""

    def _classes(self, split: Split, fine: list[str], coarse: list[str],
                 fine_to_coarse: dict[int, int]) -> list[int]:
        return [_index(fine, name, "fine") for _, name in json_list("cifar-fs", split.value)]


class FC100(_Cifar100):
    """FC100: every fine class of the shipped lists of superclasses (``splits/fc100``)."""

    def _classes(self, split: Split, fine: list[str], coarse: list[str],
                 fine_to_coarse: dict[int, int]) -> list[int]:
        wanted = {_index(coarse, name, "coarse") for name in json_list("fc100", split.value)}
        return [f for f in range(len(fine)) if fine_to_coarse.get(f) in wanted]


def _index(names: list[str], name: str, kind: str) -> int:
    if name not in names:
        raise CorruptDatasetError(f"CIFAR-100's meta file has no {kind} class {name!r}; it is "
                                  "not the official cifar-100-python/meta")
    return names.index(name)


class Cifar10(_Cifar):
    """CIFAR-10, ten classes (see :data:`~metarun.data.imageset.TEN_CLASS_SPLIT`)."""

    folder, archive = "cifar-10-batches-py", "CIFAR10"

    def read(self) -> dict[Split, SplitImages]:
        names = list(self._file("batches.meta")["label_names"])
        train = [self._images(self._file(f"data_batch_{i}"), f"data_batch_{i}", "labels")
                 for i in range(1, 6)]
        test = self._images(self._file("test_batch"), "test_batch", "labels")
        merged = (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]))
        return ten_class_splits(merged, test, names)
