"""metarun: a command-line runner for few-shot meta-learning experiments.

``import metarun`` stays cheap: torch and Hydra are imported where they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metarun.version import __version__

if TYPE_CHECKING:
    from metarun.api import Learner


def load(path: str, device: str = "cpu") -> Learner:
    """Load the learner of a checkpoint; see :func:`metarun.api.load`."""
    from metarun.api import load as _load

    return _load(path, device=device)


def __getattr__(name: str) -> Any:
    if name == "Learner":
        from metarun.api import Learner

        return Learner
    raise AttributeError(f"module 'metarun' has no attribute {name!r}")


__all__ = ["Learner", "__version__", "load"]
