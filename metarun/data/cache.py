"""The decoded uint8 cache of an image dataset: one ``.npy`` file that can be memory-mapped.

Decoding (PNG/JPEG, resizing, unpickling gigabytes) is done once; later runs open the cache.
The cache is a plain ``.npy`` array ``[total, C, H, W]`` (every split, each sorted by class)
next to a ``.json`` file that says what it holds and what it was built from. It is used only
when that record matches the source files' fingerprint (name, size and modification time of
each) and the array's shape, so it is never silently stale: a changed source is rebuilt, with a
warning that says why. Opened with ``memmap``, the array stays on disk and the operating system
pages in only the images an episode gathers, so a 16.5 GB tieredImageNet trains in a small
resident memory.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metarun.data.formats import read_npy_header

log = logging.getLogger(__name__)

FORMAT = 1


@dataclass(frozen=True)
class SplitImages:
    """One split, decoded: ``pixels`` ``[total, C, H, W]`` uint8 sorted by class, the class
    names in that order and the number of images of each. ``release``, for a memory-mapped
    cache, drops the pages the process has read (they are read again when needed)."""

    pixels: np.ndarray
    classes: list[str]
    counts: list[int]
    release: Callable[[], None] | None = None


#: For each split name: its class names and the number of images of each, in cache order.
Layout = dict[str, tuple[list[str], list[int]]]


class BankCache:
    """The cache file of one dataset configuration.

    Args:
        path: the ``.npy`` file (the record is the same path with ``.json``).
        source: a JSON-able description of the source files (:func:`formats.fingerprint`)
            and of every setting that changes the decoded pixels.
        shape: ``(C, H, W)`` of one image.
    """

    def __init__(self, path: Path, source: Any, shape: tuple[int, int, int]) -> None:
        self.path, self.record = path, path.with_suffix(".json")
        self.source = json.loads(json.dumps(source))  # as it reads back
        self.shape = tuple(int(s) for s in shape)

    def read(self, memmap: bool) -> dict[str, SplitImages] | None:
        """The cached splits, or ``None`` (with a warning saying why) when there is no
        usable cache."""
        if not self.path.exists() or not self.record.exists():
            return None
        problem = None
        try:
            meta = json.loads(self.record.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT or tuple(meta.get("shape", ())) != self.shape:
                problem = "it was written for another format or image size"
            elif meta.get("source") != self.source:
                problem = "the files it was built from have changed"
            else:
                pixels, release = (_map(self.path) if memmap
                                   else (np.load(self.path, allow_pickle=False), None))
                total = sum(sum(counts) for _, counts in meta["layout"].values())
                if pixels.dtype != np.uint8 or pixels.shape != (total, *self.shape):
                    problem = f"it holds an array of {pixels.dtype} {pixels.shape}"
        except (OSError, ValueError, KeyError, TypeError) as e:
            problem = f"it cannot be read ({type(e).__name__}: {e})"
        if problem is not None:
            log.warning("ignoring the cache %s because %s; rebuilding it", self.path, problem)
            return None
        out, start = {}, 0
        for split, (classes, counts) in meta["layout"].items():
            end = start + sum(counts)
            out[split] = SplitImages(pixels[start:end], list(classes), list(counts), release)
            start = end
        return out

    def build(self, layout: Layout, fill: Callable[[str, np.ndarray], None],
              memmap: bool) -> dict[str, SplitImages]:
        """Write the cache: ``fill(split, view)`` writes each split's images, sorted by class,
        into ``view`` (``[n, C, H, W]`` uint8, memory-mapped, so a split larger than memory is
        written as it is decoded). The files appear only when complete."""
        total = sum(sum(counts) for _, counts in layout.values())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".npy.tmp")
        os.close(fd)
        try:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                              shape=(total, *self.shape))
            start = 0
            for split, (_, counts) in layout.items():
                end = start + sum(counts)
                fill(split, array[start:end])
                start = end
            array.flush()
            del array
            meta = {"format": FORMAT, "shape": list(self.shape), "source": self.source,
                    "layout": {s: [list(c), [int(n) for n in k]] for s, (c, k) in
                               layout.items()}}
            self.record.unlink(missing_ok=True)  # no record ever describes a half-moved cache
            os.replace(tmp, self.path)
            _write_text(self.record, json.dumps(meta))
        finally:
            Path(tmp).unlink(missing_ok=True)
        cached = self.read(memmap)
        assert cached is not None
        return cached


def _map(path: Path) -> tuple[np.ndarray, Callable[[], None]]:
    """The ``.npy`` array at ``path``, memory-mapped copy-on-write (writable for torch, never
    written back), and a function that drops the pages read so far.

    Why the release: the kernel maps pages around each one an episode touches (fault-around,
    read-ahead), and keeps them mapped, so resident memory would creep toward the file's size
    (measured here: +175 MB of resident pages for 2,000 scattered images of 84x84, 42 MB of
    pixels). Dropping them after each gather (``MADV_DONTNEED``; clean pages of a private
    mapping are simply read again from the page cache) keeps it to the images in use."""
    with open(path, "rb") as f:
        shape, fortran, dtype = read_npy_header(f)
        offset = f.tell()
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    if fortran:
        raise ValueError("the cache array is not in C order")
    advice = getattr(mmap, "MADV_DONTNEED", None)

    def release() -> None:
        if advice is not None and hasattr(mapped, "madvise"):
            mapped.madvise(advice)

    return np.ndarray(shape, dtype=dtype, buffer=mapped, offset=offset), release


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
