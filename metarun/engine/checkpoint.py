"""Checkpoints: complete or invisible, loadable without running code.

A checkpoint is a dict of tensors and plain values (no pickled objects), written to a
temporary file in the same folder, flushed, then renamed over the old one, so a crash leaves
either the old or the new file, never half of one. It carries the resolved config and the
metarun version, so it can be used without the run directory.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

FORMAT = 1

log = logging.getLogger("metarun")


def previous_path(path: str | Path) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint that ``path`` replaced."""
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_checkpoint(path: str | Path, payload: dict[str, Any], keep_previous: bool = False) -> None:
    """Atomically write ``payload`` (tensors and plain values only) to ``path``.

    With ``keep_previous``, the file it replaces is kept as :func:`previous_path` (renamed
    only once the new one is complete), so a damaged newest checkpoint has a fallback.
    """
    from metarun.version import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "metarun_version": __version__, **payload}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(blob, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, f"could not write checkpoint {path}: {e.strerror or e}; the "
                               "previous checkpoint is unchanged") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's ``checkpoints/best.pt``."""
    path = Path(path)
    return path / "checkpoints" / "best.pt" if path.is_dir() else path


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
        with warnings.catch_warnings():  # about a foreign pickle, which the error then names
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with what the user needs to know
        raise CheckpointError(path, "not a loadable metarun checkpoint (truncated, or holding "
                                    f"objects other than tensors and plain values): "
                                    f"{_reason(e)}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(path, f"not a metarun checkpoint (format {FORMAT})")
    return blob


class CheckpointError(ValueError):
    """A file that is not a loadable metarun checkpoint; ``reason`` says why in one line."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is {reason}")
        self.path, self.reason = path, reason


#: Lines of torch's load errors that explain torch, not the file.
_BOILERPLATE = ("Weights only load failed", "Check the documentation", "Please file an issue")


def _reason(error: Exception) -> str:
    """The one line of torch's (often many-line) load error that says what is wrong with the
    file: for a refused pickle, the object it tried to load."""
    for line in str(error).splitlines():
        line = line.strip().rpartition("WeightsUnpickler error:")[2].strip()
        if line and not line.startswith(_BOILERPLATE):
            return line.split(". ")[0].rstrip(".")
    return type(error).__name__


def load_resumable(directory: str | Path,
                   map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path]:
    """The newest loadable checkpoint of a run: ``last.pt``, or, when that one is missing or
    damaged, the one it replaced (``last.prev.pt``).

    Raises:
        FileNotFoundError: neither exists.
        ValueError: neither loads; the message names both problems.
    """
    last = Path(directory) / "last.pt"
    problems = []
    for path in (last, previous_path(last)):
        try:
            return load_checkpoint(path, map_location), path
        except FileNotFoundError:
            problems.append(f"{path.name} is missing")
        except CheckpointError as e:
            problems.append(f"{path.name} is {e.reason}")
            if path == last:
                log.warning("%s; falling back to %s", e, previous_path(last).name)
    if not last.exists() and not previous_path(last).exists():
        raise FileNotFoundError(f"no checkpoint to resume from in {directory}")
    raise ValueError(f"no loadable checkpoint to resume from in {directory}: "
                     + "; ".join(problems))


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state training reads: the episode generator, torch (CPU and CUDA),
    Python's and numpy's global generators, as tensors and plain values."""
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    keys = np.asarray(keys)
    return {
        "episodes": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached],
    }


def set_rng_state(generator: torch.Generator, state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    import numpy as np

    generator.set_state(state["episodes"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
