"""Reading dataset files safely: pickles that cannot run code, one-line errors for the files
people actually end up with (a web page saved under a data file's name, a cut-off download),
known checksums, and the shipped class lists of the standard splits.

Pickled formats (CIFAR's python batches, the miniImageNet and tieredImageNet pickles) hold only
dicts, lists, strings, numbers and numpy arrays. :func:`read_pickle` admits exactly those: a
crafted file that asks for any other callable (``os.system``, ``builtins.eval``...) is refused
before anything runs. The peers call ``pickle.load`` on whatever they downloaded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import pickle
from importlib import resources
from pathlib import Path
from typing import Any

from metarun.errors import CorruptDatasetError

#: What the pickled dataset formats need to rebuild numpy arrays, and nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1").
    ("_codecs", "encode"),
}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it asks to load {module}.{name}")
        return super().find_class(module, name)


def sniff(path: Path, head: bytes) -> str | None:
    """Why the first bytes of ``path`` cannot be a data file, or ``None``."""
    text = head.lstrip().lower()
    if not head:
        return "is empty"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"<")):
        return ("is an HTML page, not data (a download that was answered with a web page, "
                "e.g. Google Drive's 'cannot scan this file' warning)")
    return None


def _refuse(path: Path, problem: str, fix: str) -> CorruptDatasetError:
    return CorruptDatasetError(f"{path} {problem}; {fix}")


def check_head(path: Path, fix: str) -> None:
    """Raise :class:`CorruptDatasetError` when ``path`` is empty or a web page."""
    with open(path, "rb") as f:
        problem = sniff(path, f.read(512))
    if problem is not None:
        raise _refuse(path, problem, fix)


def read_npy_header(f: Any) -> tuple[tuple[int, ...], bool, Any]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream ``f``, left at its data."""
    import numpy as np

    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read(f)
    return tuple(shape), bool(fortran), dtype


def read_pickle(path: Path, fix: str, encoding: str = "latin1") -> Any:
    """The content of a pickled data file, read with the restricted unpickler.

    Args:
        path: the file.
        fix: how to get a good copy (ends the error line).
        encoding: for Python 2 pickles (CIFAR's batches): how their byte strings decode.

    Raises:
        CorruptDatasetError: an HTML page, an empty or truncated file, not a pickle, or a
            pickle that asks for anything but containers and numpy arrays.
    """
    check_head(path, fix)
    with open(path, "rb") as f:
        try:
            return _DataUnpickler(f, encoding=encoding).load()
        except pickle.UnpicklingError as e:
            if "asks to load" in str(e):
                raise _refuse(path, f"was refused: {e}, which no data file needs (it may "
                              "be crafted to run code)", fix) from None
            raise _refuse(path, f"is truncated or not in the expected format ({e})", fix
                          ) from None
        except (EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
            raise _refuse(path, f"is truncated or not in the expected format "
                          f"({type(e).__name__}: {e})", fix) from None


def check_md5(path: Path, md5: str, fix: str) -> None:
    """Raise :class:`CorruptDatasetError` unless ``path``'s MD5 is ``md5``."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != md5:
        raise _refuse(path, f"has MD5 {digest.hexdigest()}, not the published {md5} "
                      "(truncated or altered)", fix)


def fingerprint(paths: list[Path]) -> list[list[Any]]:
    """What identifies source files cheaply: name, size and modification time of each (a
    changed, replaced or re-downloaded file changes it). Content hashes are checked where a
    checksum is published, when the cache is built."""
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(paths)]


# --- the shipped class lists -------------------------------------------------------------

def split_file(benchmark: str, split: str) -> Any:
    """The shipped class list ``metarun/data/splits/<benchmark>/<split>.*`` as a resource."""
    folder = resources.files("metarun.data") / "splits" / benchmark
    for suffix in (".json", ".csv"):
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"metarun ships no {split} list for {benchmark}")


def json_list(benchmark: str, split: str) -> list[Any]:
    data = json.loads(split_file(benchmark, split).read_text(encoding="utf-8"))
    assert isinstance(data, list)
    return data


def csv_rows(benchmark: str, split: str, header: bool) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(split_file(benchmark, split).read_text("utf-8"))))
    return [r for r in rows[1 if header else 0:] if r]
