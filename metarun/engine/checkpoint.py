"""Checkpoints: complete or invisible, loadable without running code.

A checkpoint is a dict of tensors and plain values (no pickled objects), written to a
temporary file in the same folder, flushed, then renamed over the old one, so a crash leaves
either the old or the new file, never half of one. It carries the resolved config and the
metarun version, so it can be used without the run directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Atomically write ``payload`` (tensors and plain values only) to ``path``."""
    from metarun import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "metarun_version": __version__, **payload}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(blob, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` without unpickling code.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a metarun checkpoint, or it holds anything but tensors and
            plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with what the user needs to know
        raise ValueError(
            f"{path} could not be loaded as a metarun checkpoint (it may be truncated, or hold "
            f"objects other than tensors and plain values): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a metarun checkpoint (format {FORMAT})")
    return blob
