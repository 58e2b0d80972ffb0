"""Omniglot (Lake et al., 2015): 1623 handwritten characters from 50 alphabets, 20 drawings each.

The two official archives are decoded once into a uint8 tensor cache (``28x28``, antialiased,
strokes bright); every later run loads that cache. Two split protocols:

* ``maml``: all 1623 characters, shuffled with a fixed seed, into 1100 train, 100 val and
  423 test characters, alphabets mixed (Vinyals et al. 2016; Finn et al. 2017).
* ``lake``: train on the 30 background alphabets less ``val_alphabets`` of them (held out for
  validation), test on the 20 evaluation alphabets (Lake et al. 2015).

With ``rotations`` each character rotated by 0, 90, 180 and 270 degrees is its own class.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metarun.data.download import download
from metarun.data.episodes import ClassImages, to_float
from metarun.data.imageset import to_pixels
from metarun.errors import CorruptDatasetError, DatasetNotFoundError
from metarun.tasktypes import CLASSIFICATION
from metarun.types import Split

log = logging.getLogger(__name__)

SOURCES = ("images_background", "images_evaluation")
URL_PREFIX = "https://github.com/brendenlake/omniglot/raw/master/python"
MD5 = {  # of the official archives, as published
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
CHARACTERS = {"images_background": 964, "images_evaluation": 659}
DRAWINGS = 20
MAML_SPLIT = (1100, 100, 423)
CACHE_FORMAT = 1
_SPLIT_SEED = 0  # part of the protocol: changing it changes which characters are tested


def preprocess_image(image: Any, image_size: int) -> np.ndarray:
    """One raw Omniglot-style image to stored pixels.

    Args:
        image: a PIL image or an array ``[H, W]`` / ``[H, W, C]`` with dark strokes on a light
            background, as in the Omniglot PNGs.
        image_size: output side length.

    Returns:
        ``[image_size, image_size]`` uint8, strokes bright (255) on black (0).
    """
    return 255 - to_pixels(image, image_size, 1)[0]


@dataclass(frozen=True)
class _Characters:
    """All 1623 characters, decoded. ``images``: ``[1623, 20, S, S]`` uint8."""

    images: Tensor
    alphabets: list[str]  # per character, e.g. "images_background/Latin"
    names: list[str]  # per character, e.g. "images_background/Latin/character01"


class Omniglot:
    """The Omniglot dataset as few-shot splits.

    Constructing it is cheap; :meth:`load` finds (or downloads) the archives and decodes or
    loads the cache.

    Args:
        root: data folder; Omniglot lives in ``<root>/omniglot/``. ``~`` is expanded.
        cache_dir: where the decoded tensor cache is written (never inside ``root``).
        split: ``"maml"`` or ``"lake"`` (see the module docstring).
        rotations: add 90/180/270-degree rotations of every character as new classes.
        within_alphabet: draw all classes of an episode from one alphabet.
        image_size: side length of the stored images.
        val_alphabets: for ``split="lake"``, how many background alphabets are held out.
        download: fetch the official archives when they are missing.
    """

    channels = 1
    task_type = CLASSIFICATION

    def __init__(
        self,
        root: str,
        cache_dir: str,
        split: str = "maml",
        rotations: bool = True,
        within_alphabet: bool = False,
        image_size: int = 28,
        val_alphabets: int = 5,
        download: bool = True,
    ) -> None:
        if split not in ("maml", "lake"):
            raise ValueError(f"data.split must be 'maml' or 'lake'; got {split!r}")
        if not 8 <= image_size <= 105:
            raise ValueError(f"data.image_size must be in [8, 105]; got {image_size}")
        if not 1 <= val_alphabets <= 29:
            raise ValueError(f"data.val_alphabets must be in [1, 29]; got {val_alphabets}")
        self.root = Path(os.path.expanduser(str(root))) / "omniglot"
        self.cache_dir = Path(os.path.expanduser(str(cache_dir)))
        self.split = split
        self.rotations = rotations
        self.within_alphabet = within_alphabet
        self.image_size = image_size
        self.val_alphabets = val_alphabets
        self.download = download

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one model input."""
        return (self.channels, self.image_size, self.image_size)

    def preprocess(self, images: Sequence[Any]) -> Tensor:
        """Raw images (PIL or uint8 arrays, dark strokes on light) to model input.

        Exactly the preprocessing of training: resize, invert, scale to ``[0, 1]``.

        Returns:
            ``[B, 1, S, S]`` float.
        """
        pixels = np.stack([preprocess_image(im, self.image_size) for im in images])
        return to_float(torch.from_numpy(pixels)[:, None])

    def load(self) -> dict[Split, ClassImages]:
        """Decode (or load from cache) and split. Returns one :class:`ClassImages` per split."""
        chars = self._characters()
        members = self._split_characters(chars)
        alphabet_ids = {a: i for i, a in enumerate(sorted(set(chars.alphabets)))}
        splits = {}
        for split, idx in members.items():
            images = chars.images[idx][:, :, None]  # [chars, 20, 1, S, S]
            groups = torch.tensor([alphabet_ids[chars.alphabets[i]] for i in idx.tolist()])
            if self.rotations:
                images = torch.cat([images.rot90(k, dims=(-2, -1)) for k in range(4)])
                groups = groups.repeat(4)
            splits[split] = ClassImages(
                images.contiguous(), groups if self.within_alphabet else None
            )
        return splits

    # -- splits --------------------------------------------------------------------------

    def _split_characters(self, chars: _Characters) -> dict[Split, Tensor]:
        g = torch.Generator().manual_seed(_SPLIT_SEED)
        if self.split == "maml":
            order = torch.randperm(len(chars.names), generator=g)
            n_train, n_val, _ = MAML_SPLIT
            return {
                Split.TRAIN: order[:n_train].sort().values,
                Split.VAL: order[n_train:n_train + n_val].sort().values,
                Split.TEST: order[n_train + n_val:].sort().values,
            }
        background = sorted({a for a in chars.alphabets if a.startswith(SOURCES[0])})
        held = torch.randperm(len(background), generator=g)[: self.val_alphabets].tolist()
        val_alphabets = {background[i] for i in held}
        split_of = []
        for a in chars.alphabets:
            if not a.startswith(SOURCES[0]):
                split_of.append(Split.TEST)
            elif a in val_alphabets:
                split_of.append(Split.VAL)
            else:
                split_of.append(Split.TRAIN)
        return {
            s: torch.tensor([i for i, t in enumerate(split_of) if t is s]) for s in Split
        }

    # -- the cache -----------------------------------------------------------------------

    @property
    def cache_path(self) -> Path:
        return self.cache_dir / f"omniglot-{self.image_size}px-v{CACHE_FORMAT}.pt"

    def fetch(self) -> dict[str, Path]:
        """The two official archives (or their folders) under ``data.root``, downloaded with
        their published MD5s where missing (and ``download`` allows).

        Raises:
            DatasetNotFoundError: one is missing and cannot be downloaded; says where to put
                it.
        """
        return {name: self._locate(name) for name in SOURCES}

    def _characters(self) -> _Characters:
        sources = self.fetch()
        fingerprint = {name: _fingerprint(path) for name, path in sources.items()}
        cached = self._read_cache(fingerprint)
        if cached is not None:
            return cached
        log.info("decoding Omniglot from %s into %s (once)", self.root, self.cache_path)
        chars = _decode(sources, self.image_size)
        self._write_cache(chars, fingerprint)
        return chars

    def _read_cache(self, fingerprint: dict[str, str]) -> _Characters | None:
        path = self.cache_path
        if not path.exists():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            images = blob["images"]
            problem = None
            if blob.get("format") != CACHE_FORMAT or blob.get("image_size") != self.image_size:
                problem = "it was written by another format version"
            elif blob.get("source") != fingerprint:
                problem = "the archives it was built from have changed"
            elif tuple(images.shape) != (
                sum(CHARACTERS.values()), DRAWINGS, self.image_size, self.image_size
            ) or images.dtype != torch.uint8:
                problem = f"it holds images of shape {tuple(images.shape)}"
            elif _sha256(images) != blob.get("sha256"):
                problem = "its checksum does not match its content"
        except Exception as e:  # noqa: BLE001 - any unreadable cache is rebuilt, and we say why
            problem = f"it cannot be read ({type(e).__name__}: {e})"
        if problem is not None:
            log.warning("ignoring the Omniglot cache %s because %s; rebuilding it", path, problem)
            return None
        return _Characters(images, list(blob["alphabets"]), list(blob["names"]))

    def _write_cache(self, chars: _Characters, fingerprint: dict[str, str]) -> None:
        blob = {
            "format": CACHE_FORMAT,
            "image_size": self.image_size,
            "source": fingerprint,
            "images": chars.images,
            "alphabets": chars.alphabets,
            "names": chars.names,
            "sha256": _sha256(chars.images),
        }
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                torch.save(blob, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.cache_path)
        except OSError as e:
            # The run can go on with the decoded images; it will just decode again next time.
            log.warning("could not write the Omniglot cache to %s (%s)", self.cache_path, e)

    # -- finding and fetching the archives -----------------------------------------------

    def _locate(self, name: str) -> Path:
        folder, archive = self.root / name, self.root / f"{name}.zip"
        if folder.is_dir():
            return folder
        if archive.is_file():
            return archive
        if self.download:
            try:
                download(f"{URL_PREFIX}/{name}.zip", archive, MD5[name])
                return archive
            except OSError as e:
                reason = f"downloading {URL_PREFIX}/{name}.zip failed ({e})"
        else:
            reason = "data.download is false"
        raise DatasetNotFoundError(
            f"Omniglot is missing {archive} and {reason}. Put the official archives "
            f"images_background.zip and images_evaluation.zip (from {URL_PREFIX}) or their "
            f"extracted folders into {self.root}/, or point data.root (or the METARUN_DATA "
            "environment variable) at a folder whose omniglot/ subfolder holds them."
        )


def _sha256(images: Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


def _fingerprint(path: Path) -> str:
    if path.is_dir():
        files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*.png"))
        return "dir:" + hashlib.sha256("\n".join(files).encode()).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "zip:" + h.hexdigest()


def _members(name: str, path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield ``(alphabet/character/file, png bytes)`` in sorted order."""
    if path.is_dir():
        for p in sorted(path.glob("*/*/*.png")):
            yield p.relative_to(path).as_posix(), p.read_bytes()
        return
    try:
        with zipfile.ZipFile(path) as z:
            names = sorted(
                n for n in z.namelist() if n.endswith(".png") and n.startswith(name + "/")
            )
            for n in names:
                yield n[len(name) + 1:], z.read(n)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise CorruptDatasetError(
            f"{path} is not a readable zip archive ({e}); replace it with the official "
            f"{path.name}"
        ) from e


def _decode(sources: dict[str, Path], image_size: int) -> _Characters:
    from PIL import Image

    by_char: dict[str, list[np.ndarray]] = {}
    for name, path in sources.items():
        count = 0
        for rel, data in _members(name, path):
            alphabet, character, _ = rel.split("/")
            key = f"{name}/{alphabet}/{character}"
            pixels = preprocess_image(Image.open(io.BytesIO(data)), image_size)
            by_char.setdefault(key, []).append(pixels)
            count += 1
        chars = sum(1 for k in by_char if k.startswith(name + "/"))
        if chars != CHARACTERS[name] or count != CHARACTERS[name] * DRAWINGS:
            raise CorruptDatasetError(
                f"{path} holds {chars} characters and {count} images; Omniglot's {name} has "
                f"{CHARACTERS[name]} characters with {DRAWINGS} images each. Replace it with "
                "the official archive."
            )
    names = sorted(by_char)
    bad = [n for n in names if len(by_char[n]) != DRAWINGS]
    if bad:
        raise CorruptDatasetError(f"character {bad[0]} does not have {DRAWINGS} drawings")
    images = torch.from_numpy(np.stack([np.stack(by_char[n]) for n in names]))
    return _Characters(images, [n.rsplit("/", 1)[0] for n in names], names)
