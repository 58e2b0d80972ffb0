"""Where the tests find their data: ``$METARUN_DATA``, then the workspace's ``../shared/data``;
else fetched once, through metarun's own downloader and its checksums, into the test cache;
else the tests that need it skip with one line saying what is missing and how to provide it.
Where the data is present nothing touches the network."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("images_background", "images_evaluation")


def has_omniglot(root: Path) -> bool:
    """Whether ``root/omniglot`` holds both official archives (or their folders)."""
    folder = root / "omniglot"
    return all((folder / f"{n}.zip").is_file() or (folder / n).is_dir() for n in SOURCES)


def candidates() -> list[Path]:
    env = os.environ.get("METARUN_DATA")
    return [Path(p).expanduser().resolve() for p in (env, REPO.parent / "shared" / "data") if p]


def fetch_omniglot(root: Path) -> None:
    """Download the official archives into ``root/omniglot`` (metarun's downloader, MD5s)."""
    from metarun.data.omniglot import Omniglot

    Omniglot(str(root), str(root / "cache"), download=True).fetch()


def find_omniglot(places: list[Path], fetch_into: Path | None,
                  fetch: Callable[[Path], None] = fetch_omniglot) -> tuple[Path | None, str]:
    """``(data root, "")``, or ``(None, why)`` when Omniglot is nowhere and cannot be fetched.

    One process fetches at a time (pytest-xdist workers share ``fetch_into``).
    """
    for place in places:
        if has_omniglot(place):
            return place, ""
    where = " or ".join(str(p) for p in places) or "no folder"
    how = ("set METARUN_DATA to a folder whose omniglot/ subfolder holds "
           "images_background.zip and images_evaluation.zip")
    if fetch_into is None:
        return None, f"Omniglot is not in {where}; {how}"
    import fcntl

    fetch_into.mkdir(parents=True, exist_ok=True)
    with open(fetch_into / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if has_omniglot(fetch_into):
            return fetch_into, ""
        try:
            fetch(fetch_into)
        except (OSError, RuntimeError) as e:  # DatasetNotFoundError is both
            return None, (f"Omniglot is not in {where} and could not be downloaded into "
                          f"{fetch_into} ({' '.join(str(e).split())[:200]}); {how}")
    return fetch_into, ""


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def has_mnist(root: Path) -> bool:
    """Whether ``root/MNIST/raw`` holds the four uncompressed IDX files."""
    return all((root / "MNIST" / "raw" / name).is_file() for name in MNIST_FILES)


def find_mnist(places: list[Path], fetch_into: Path) -> tuple[Path | None, str]:
    """``(data root, "")`` of MNIST, fetched once (torchvision's download and MD5s) into
    ``fetch_into`` when no place has it; or ``(None, why)``."""
    for place in [*places, fetch_into]:
        if has_mnist(place):
            return place, ""
    import fcntl

    from metarun.data.mnist import MNIST

    fetch_into.mkdir(parents=True, exist_ok=True)
    with open(fetch_into / ".fetch-mnist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not has_mnist(fetch_into):
                MNIST(str(fetch_into), "unused", download=True).read()
        except (OSError, RuntimeError) as e:
            where = " or ".join(str(p) for p in places) or "no folder"
            return None, (f"MNIST is not in {where} and could not be downloaded into "
                          f"{fetch_into} ({' '.join(str(e).split())[:200]}); set METARUN_DATA "
                          "to a folder whose MNIST/raw/ holds the four IDX files")
    return fetch_into, ""
