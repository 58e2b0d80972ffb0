"""metarun's own config files: where they are, which components they name, and the check that a
config read from a file (a checkpoint's) names nothing else.

A checkpoint's config is data from a file that anyone may have written. Instantiating it would
call whatever its ``_target_`` strings name (``torch.load`` of a pickle, ``torch.hub.load``,
``os.system``), so before anything is imported or called every ``_target_`` must be exactly one
that metarun's own ``conf/`` puts at that place (``data._target_`` one of the ``data`` options'
classes, ``algo._target_`` one of the algorithms', ...). The config groups are the registry: a
new component's YAML file allows it, and no list here needs editing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

#: Prefixes of the keys that say where files are or how a run is watched, not what it computes:
#: they may differ between a run and its resume, between ensemble members, between the runs of
#: a report and between a completed run and a re-run of its sweep.
LOCATION_KEYS = ("data.root", "data.cache_dir", "data.download", "data.on_device", "data.memmap",
                 "train.resume", "train.plot", "paper.",
                 "train.log_every", "train.checkpoint_every")


#: ``metarun-eval``'s ``ensemble=``: how several checkpoints are combined.
ENSEMBLE_METHODS = ("average", "select", "fuse")


def config_dir() -> str:
    """``conf/`` inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"metarun's conf/ folder is missing next to {here}; reinstall metarun")


def leaves(node: Any, where: str = "", lists: bool = True) -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf of a plain (resolved) config; list elements are
    leaves ``key[i]``, or with ``lists=False`` a list is one leaf."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{where}.{key}" if where else str(key), lists)
    elif lists and isinstance(node, list):
        for i, value in enumerate(node):
            yield from leaves(value, f"{where}[{i}]", lists)
    else:
        yield where, node


class UntrustedConfigError(ValueError):
    """A config read from a file names something that metarun's own config files do not."""


def _package(file: Path, root: Path) -> str:
    """The dotted place where Hydra puts the content of ``file`` (its ``# @package`` line, else
    its group's path)."""
    with file.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("# @package"):
                package = line.split(None, 2)[2].strip()
                return "" if package == "_global_" else package
            if line.strip() and not line.startswith("#"):
                break
    group = file.parent.relative_to(root)
    return ".".join(group.parts)


def _collect(node: Any, where: str, out: dict[str, set[tuple[str, bool]]]) -> None:
    if isinstance(node, Mapping):
        if "_target_" in node:
            out.setdefault(where, set()).add((str(node["_target_"]),
                                              bool(node.get("_partial_", False))))
        for key, value in node.items():
            if not where and key == "hydra":  # Hydra's settings: never part of a job's config
                continue
            _collect(value, f"{where}.{key}" if where else str(key), out)


@functools.cache
def shipped_targets() -> dict[str, frozenset[tuple[str, bool]]]:
    """``{dotted place: {(target, partial), ...}}`` for every ``_target_`` in metarun's
    ``conf/`` (the places Hydra puts them when it composes a config)."""
    import yaml

    root = Path(config_dir())
    found: dict[str, set[tuple[str, bool]]] = {}
    for file in sorted(root.rglob("*.yaml")):
        if file.relative_to(root).parts[0] == "hydra":  # Hydra's own settings, never a job's
            continue
        _collect(yaml.safe_load(file.read_text(encoding="utf-8")), _package(file, root), found)
    return {k: frozenset(v) for k, v in found.items()}


def check_stored_config(node: Any, source: str, where: str = "") -> None:
    """Refuse a config read from ``source`` unless it names only what metarun ships.

    Every ``_target_`` must be one that ``conf/`` puts at the same place, with the same
    ``_partial_``; Hydra's other special keys (``_args_``, ``_recursive_``, ``_convert_``) and
    interpolations (``${...}``, which call resolvers) are refused outright. Nothing is imported.

    Raises:
        UntrustedConfigError: one line naming the key, its value and what is allowed there.
    """
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if target is not None:
            allowed = shipped_targets().get(where, frozenset())
            partial = node.get("_partial_", False)
            if not isinstance(target, str) or (target, partial is True) not in allowed:
                names = sorted({t for t, _ in allowed})
                raise UntrustedConfigError(
                    f"{source}: {where}._target_ = {target!r}"
                    + (f" (_partial_ = {partial!r})" if partial is not False else "")
                    + " is not a component metarun ships; refusing to build it ("
                    + (f"allowed at {where}: {', '.join(names)})" if names
                       else f"nothing is built at {where or 'the top level'})"))
        for key, value in node.items():
            if not isinstance(key, str):
                raise UntrustedConfigError(f"{source}: a config key must be a string; got "
                                           f"{key!r} under {where or 'the top level'}")
            if key.startswith("_") and key.endswith("_") and key not in ("_target_",
                                                                         "_partial_"):
                raise UntrustedConfigError(f"{source}: {where}.{key} is not allowed in a "
                                           "stored config")
            check_stored_config(value, source, f"{where}.{key}" if where else key)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_stored_config(value, source, f"{where}[{i}]")
    elif isinstance(node, str) and "${" in node:
        raise UntrustedConfigError(f"{source}: {where} = {node!r} is an interpolation; a "
                                   "stored config holds resolved values only")


def trusted_config(blob: Mapping[str, Any], source: str) -> Any:
    """The ``config`` of a checkpoint ``blob`` (read from ``source``) as a ``DictConfig``,
    after :func:`check_stored_config`.

    Raises:
        UntrustedConfigError: as :func:`check_stored_config`, or there is no config.
    """
    from omegaconf import OmegaConf

    config = blob.get("config")
    if not isinstance(config, Mapping):
        raise UntrustedConfigError(f"{source} holds no run config; it was not written by a "
                                   "metarun run")
    check_stored_config(config, source)
    return OmegaConf.create(dict(config))


_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(value: Any, key: str = "train.max_time") -> float | None:
    """A time budget in seconds: ``null``, a number of seconds, ``"90s"``, ``"15m"``,
    ``"2h"``, ``"1h30m"``, ``"1d"``, or Lightning's ``"DD:HH:MM:SS"`` / ``"HH:MM:SS"``.

    Raises:
        ValueError: anything else, or a budget that is not positive, naming ``key``.
    """
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        seconds = _clock(text) if ":" in text else _units(text)
    if seconds is None or not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{key} must be a positive duration such as 90s, 15m, 2h, 1h30m or "
                         f"00:15:00 (or a number of seconds); got {value!r}")
    return seconds


def _clock(text: str) -> float | None:
    parts = text.split(":")
    if not 2 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        return None
    seconds = 0.0
    for part, scale in zip(reversed(parts), (1, 60, 3600, 86400), strict=False):
        seconds += int(part) * scale
    return seconds


def _units(text: str) -> float | None:
    import re

    pieces = re.fullmatch(r"(?:(\d+(?:\.\d+)?)([dhms]))+", text)
    if not pieces:
        try:
            return float(text)
        except ValueError:
            return None
    return sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([dhms])", text))
