"""Finding metarun runs on disk and reading what each one says about itself."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metarun.engine.lock import is_locked
from metarun.summary import (
    COMPLETED,
    DAMAGED,
    EVAL,
    PRUNED,
    RUNNING,
    TRAIN,
    UNFINISHED,
    command_of_dir,
    describe,
    is_training_summary,
    read_summary,
)

log = logging.getLogger("metarun")
#: Not read yet (``None`` means a damaged summary).
_UNREAD = object()

@dataclass
class RunRecord:
    """One run directory.

    Attributes:
        path: the run directory.
        status: ``completed``, ``failed``, ``preempted``, ``non_finite``, ``pruned``,
            ``running``, ``unfinished`` or ``damaged``.
        overrides: the command-line overrides it was started with (``.hydra/overrides.yaml``),
            as ``key -> value`` strings.
        summary: ``summary.json``, or an empty dict.
        last_step: the last step in ``metrics.jsonl`` (for runs that did not finish).
    """

    path: Path
    status: str
    overrides: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    last_step: int | None = None

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @property
    def failed(self) -> bool:
        """Whether it ended otherwise than meant: not completed, and not a search trial that
        the search's pruner stopped (``pruned``)."""
        return self.status not in (COMPLETED, PRUNED)

    @property
    def trained(self) -> bool:
        """Whether it is a training run, not a ``metarun-eval`` job."""
        return command_of_dir(self.path, self.summary) != EVAL

    @property
    def error(self) -> str:
        return str(self.summary.get("error", ""))


def is_run_dir(path: Path, summary: dict[str, Any] | None | object = _UNREAD) -> bool:
    """A metarun training run or ``metarun-eval`` job (:func:`~metarun.summary.command_of_dir`),
    or a directory whose ``summary.json`` is damaged (shown as such, never dropped).
    ``summary``: its :func:`~metarun.summary.read_summary`, when already read."""
    if summary is _UNREAD:
        summary = read_summary(path)
    if summary is None:
        return True
    assert isinstance(summary, dict)
    return command_of_dir(path, summary) in (TRAIN, EVAL)


def find_runs(roots: list[str | Path]) -> list[RunRecord]:
    """Every run directory at or below ``roots`` (a run's own subfolders are not searched),
    in path order, each once.

    Raises:
        FileNotFoundError: a root does not exist.
    """
    found: dict[Path, RunRecord] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such directory")
        for dirpath, dirnames, _ in os.walk(root):
            here = Path(dirpath)
            summary = read_summary(here)
            if is_run_dir(here, summary):
                here = here.resolve()
                found.setdefault(here, read_run(here, summary))
                dirnames.clear()
            else:
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found.values(), key=lambda r: _natural(r.path))


def _natural(path: Path) -> list[Any]:
    """Sort key that puts job 2 before job 10."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts]


def read_run(path: Path, summary: dict[str, Any] | None | object = _UNREAD) -> RunRecord:
    """What ``path`` says about its run (``summary``: its ``summary.json``, when already
    read). ``metrics.jsonl`` is read only for a run whose summary gives no step count."""
    if summary is _UNREAD:
        summary = read_summary(path)
    overrides = read_overrides(path)
    if summary is None:
        log.warning("%s/summary.json is damaged (not a JSON object); the run is listed as "
                    "damaged", path)
        summary, status = {"error": "summary.json is damaged"}, DAMAGED
    else:
        assert isinstance(summary, dict)
        # a training run's files with another command's summary is damaged
        ours = is_training_summary(summary) or command_of_dir(path, summary) == EVAL
        status = str(summary.get("status", "")) if ours else (DAMAGED if summary else "")
        if status == DAMAGED:
            log.warning("%s holds %s but a training run's files; listed as damaged", path,
                        describe(summary))
            summary = {"error": f"summary.json is {describe(summary)}"}
    last_step = None
    records = path / "metrics.jsonl"
    if not isinstance(summary.get("steps"), int) and records.is_file():
        from metarun.report.plots import read_metrics

        steps = [int(r["step"]) for r in read_metrics(records) if r["split"] != "test"]
        last_step = max(steps) if steps else None
    if not status:
        status = RUNNING if is_locked(path) else UNFINISHED
    return RunRecord(path, status, overrides, summary, last_step)


def read_overrides(path: Path) -> dict[str, str]:
    """``.hydra/overrides.yaml`` as ``key -> value`` (``+``/``++`` prefixes dropped)."""
    file = path / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return {}
    from omegaconf import OmegaConf

    out = {}
    for item in OmegaConf.to_container(OmegaConf.load(file)) or []:
        key, sep, value = str(item).partition("=")
        if sep and not key.startswith("~"):
            out[key.lstrip("+")] = value
    return out
