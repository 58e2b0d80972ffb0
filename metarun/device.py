"""Resolve the compute device once, loudly.

A device that was asked for but is not there is an error, never a silent fallback: a run
that silently trains on the CPU for a day is worse than one that stops at once.
"""

from __future__ import annotations

import re

import torch

from metarun.errors import DeviceUnavailableError

__all__ = ["DeviceUnavailableError", "resolve_device"]

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def resolve_device(spec: str) -> torch.device:
    """Turn a device spec into a usable ``torch.device``.

    Args:
        spec: ``"auto"`` (CUDA if available, else MPS, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"`` or ``"mps"``.

    Raises:
        ValueError: the spec is not one of the forms above.
        DeviceUnavailableError: the spec names a device this machine does not have.
    """
    match = _DEVICE_RE.match(str(spec).strip())
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise ValueError(f"device must be one of auto, cpu, cuda, cuda:N, mps; got {spec!r}")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise DeviceUnavailableError(
                "device=mps was requested but the MPS backend is not available on this "
                "machine; use device=cpu or device=auto"
            )
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device={spec} was requested but CUDA is not available (torch "
            f"{torch.__version__}, built with CUDA {torch.version.cuda}, sees no GPU); "
            "use device=cpu or device=auto"
        )
    count = torch.cuda.device_count()
    i = int(index) if index is not None else torch.cuda.current_device()
    if i >= count:
        raise DeviceUnavailableError(
            f"device={spec} was requested but only {count} CUDA device(s) are visible "
            f"(cuda:0..cuda:{count - 1})"
        )
    return torch.device("cuda", i)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
