"""Which checkpoint a training run continues from, and which changes of the command still make
it the same run. Only reads the run directory (and, when a promised resume cannot work,
corrects its summary to say so)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from metarun.configs import LOCATION_KEYS, leaves, parse_duration
from metarun.engine.checkpoint import load_resumable
from metarun.errors import OutputDirError, RunCompletedError
from metarun.summary import (
    COMPLETED,
    TRAIN,
    describe,
    is_training_summary,
    read_summary,
    write_summary,
)

log = logging.getLogger("metarun")

#: Keys in which a re-run may differ from a completed run and still be the same run.
SAME_RUN_CHANGES = (*LOCATION_KEYS, "device.", "logger.", "dist.", "threads")
#: How long to train: a run may be resumed with other values, and a completed run is
#: continued by values that let it train further.
LENGTH_KEYS = ("train.iterations", "train.max_time")
#: Keys that may change when a run is resumed.
RESUMABLE_CHANGES = (*SAME_RUN_CHANGES, *LENGTH_KEYS)


def differences(before: Any, now: dict[str, Any], allowed: tuple[str, ...]) -> list[str]:
    """The dotted keys whose values differ between two plain configs, except those starting
    with one of ``allowed``."""
    old = dict(leaves(before if isinstance(before, dict) else {}, lists=False))
    new = dict(leaves(now, lists=False))
    return sorted(k for k in old.keys() | new.keys()
                  if old.get(k) != new.get(k) and not k.startswith(allowed))


def resume_point(out: Path, config: dict[str, Any], explicit: bool) -> dict[str, Any] | None:
    """The checkpoint to continue from, or ``None`` for a fresh run. Only reads ``out``.

    Raises:
        RunCompletedError: ``out`` holds a completed run of this experiment.
        OutputDirError: it holds a completed run of another experiment, or another command's
            result.
        ValueError: its checkpoint belongs to a different experiment, or none loads.
    """
    summary = read_summary(out)
    if summary is None:
        log.warning("%s/summary.json is damaged; going by the run's checkpoints", out)
    elif summary and not is_training_summary(summary):
        raise OutputDirError(f"{out} holds {describe(summary)}, not a training run; choose "
                             "another hydra.run.dir")
    completed = isinstance(summary, dict) and summary.get("status") == COMPLETED
    checkpoints = out / "checkpoints"
    if not (checkpoints / "last.pt").exists() and not (checkpoints / "last.prev.pt").exists():
        if completed:
            raise OutputDirError(f"{out} already holds a completed run whose checkpoints are "
                                 "missing; choose another hydra.run.dir")
        if explicit:
            raise FileNotFoundError(f"train.resume = {out}: no checkpoint to resume from")
        return None
    try:
        blob, path = load_resumable(checkpoints)
    except ValueError as e:
        if summary and summary.get("resumable"):  # it promised a resume that cannot work
            write_summary(out, {**summary, "command": TRAIN, "resumable": False,
                                "error": str(e)})
        raise
    if completed:
        changed = differences(blob.get("config"), config, SAME_RUN_CHANGES)
        if changed and set(changed) <= set(LENGTH_KEYS) and _trains_further(blob, config):
            log.info("continuing the completed run %s from step %d: train.iterations or "
                     "train.max_time now lets it train further", out, blob["step"])
            return blob
        if changed:
            raise OutputDirError(f"{out} already holds a completed run with different "
                                 f"{', '.join(changed)}; choose another directory")
        raise RunCompletedError(out)
    changed = differences(blob.get("config"), config, RESUMABLE_CHANGES)
    if changed:
        raise ValueError(f"cannot resume {out}: the run was started with different "
                         f"{', '.join(changed)}; only {', '.join(RESUMABLE_CHANGES)} may "
                         "change on resume")
    log.info("resuming %s from %s (step %d)", out, path, blob["step"])
    return blob


def _trains_further(blob: dict[str, Any], config: dict[str, Any]) -> bool:
    """Whether ``config``'s ``train.iterations`` and ``train.max_time`` let the run of the
    checkpoint ``blob`` (its last step) train past that step."""
    train = config.get("train") or {}
    budget = parse_duration(train.get("max_time"))
    spent = float(blob.get("elapsed", 0.0))
    return int(train.get("iterations", 0)) > int(blob["step"]) and (
        budget is None or budget > spent)


