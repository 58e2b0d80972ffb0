"""MNIST (LeCun et al. 1998) as few-shot tasks: the ten digits, split as
:data:`~metarun.data.imageset.TEN_CLASS_SPLIT` says (train on 0-4; validate on the official
training images of 5-9, test on their official test images).

Files: torchvision's layout, ``<root>/MNIST/raw/`` with the four uncompressed IDX files, read
and downloaded (with their published MD5s) by ``torchvision.datasets.MNIST``. The uncompressed
files are checked against the MD5s of the official files when they have the official size.
Reading the IDX files takes well under a second, so there is no separate cache.
"""

from __future__ import annotations

import logging

import numpy as np

from metarun.data.cache import SplitImages
from metarun.data.formats import check_md5
from metarun.data.imageset import ImageDataset, ten_class_splits
from metarun.errors import CorruptDatasetError, DatasetNotFoundError
from metarun.types import Split

log = logging.getLogger(__name__)

#: The official uncompressed IDX files: size in bytes and MD5.
OFFICIAL = {
    "train-images-idx3-ubyte": (47040016, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60008, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (7840016, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10008, "27ae3e4e09519cfbb04c329615203637"),
}
_FIX = ("delete it and let data.download fetch the official files, or copy them from "
        "https://ossci-datasets.s3.amazonaws.com/mnist/ (gunzipped)")


class MNIST(ImageDataset):
    """MNIST, 28x28 grey digits, 5 train / 5 held-out classes (see the module docstring)."""

    folder = "MNIST"
    channels, size = 1, 28

    def read(self) -> dict[Split, SplitImages]:
        raw = self.root / "raw"
        missing = [name for name in OFFICIAL if not (raw / name).is_file()]
        if missing and not self.download:
            raise DatasetNotFoundError(
                f"MNIST is missing {raw / missing[0]} and data.download is false. Put the four "
                f"uncompressed IDX files ({', '.join(OFFICIAL)}) into {raw}/ (torchvision's "
                "layout), or point data.root (or METARUN_DATA) at a folder whose MNIST/raw/ "
                "holds them.")
        for name, (size, md5) in OFFICIAL.items():
            path = raw / name
            if path.is_file() and path.stat().st_size == size:
                check_md5(path, md5, _FIX)
        parts = [self._torchvision(train) for train in (True, False)]
        return ten_class_splits(parts[0], parts[1], [str(d) for d in range(10)])

    def _torchvision(self, train: bool) -> tuple[np.ndarray, np.ndarray]:
        from torchvision.datasets import MNIST as TorchvisionMNIST

        root, raw = self.root.parent, self.root / "raw"
        present = all((raw / name).is_file() for name in OFFICIAL)
        try:
            data = TorchvisionMNIST(str(root), train=train, download=not present)
        except (RuntimeError, OSError, AssertionError, ValueError, IndexError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if not present:  # torchvision's download failed
                raise DatasetNotFoundError(f"MNIST is missing from {raw} and downloading it "
                                           f"failed ({first}); put the four IDX files there"
                                           ) from None
            raise CorruptDatasetError(f"an MNIST file in {raw} is truncated or not an IDX "
                                      f"file ({first}); {_FIX}") from None
        images = data.data.numpy()[:, None]  # [N, 1, 28, 28] uint8
        return images, data.targets.numpy()
