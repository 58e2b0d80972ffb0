"""``summary.json``: one schema and one atomic writer for every job.

Every job (a ``metarun`` training run, a ``metarun-eval`` evaluation or ensemble) ends by
writing one JSON object with at least:

* ``command``: the console script whose job wrote it (:data:`COMMANDS`);
* ``status``: how the job ended (:data:`STATUSES`);
* on success, ``metric`` and ``higher_is_better`` (the task type's), and the job's result:
  a training run's ``test`` and ``val`` sections, an evaluation's ``result``.

Summaries written before ``command`` was part of every summary are still read (see
:func:`command_of`); nothing else in metarun tells the formats apart.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAIN, EVAL = "metarun", "metarun-eval"
#: The commands whose jobs write summaries (``metarun-ensemble`` runs metarun-eval's job).
COMMANDS = (TRAIN, EVAL)

COMPLETED, FAILED, PREEMPTED, NON_FINITE = "completed", "failed", "preempted", "non_finite"
#: A trial of an Optuna search that its pruner stopped early (not a failure).
PRUNED = "pruned"
#: How a job can end (``summary.json`` ``status``).
STATUSES = (COMPLETED, FAILED, PREEMPTED, NON_FINITE, PRUNED)
#: What the report says of a run directory without a readable final summary: its lock is
#: held (``running``), it was killed (``unfinished``), or its summary is not a training run's
#: although the directory holds a training run's files (``damaged``).
RUNNING, UNFINISHED, DAMAGED = "running", "unfinished", "damaged"


def read_summary(directory: str | Path) -> dict[str, Any] | None:
    """``summary.json`` of ``directory`` as a dict, ``{}`` when it is missing, ``None`` when
    it is there but not a JSON object (damaged)."""
    path = Path(directory) / "summary.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_summary(directory: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``directory/summary.json`` atomically: to a temporary file in the same folder,
    flushed to disk, then renamed, so a reader (or a crash) sees the old file or the new one,
    never half of one. The only code that writes a summary.

    Raises:
        ValueError: ``summary`` lacks a known ``command`` or ``status`` (a bug).
    """
    if summary.get("command") not in COMMANDS or summary.get("status") not in STATUSES:
        raise ValueError(f"a summary needs a command in {COMMANDS} and a status in "
                         f"{STATUSES}; got {summary.get('command')!r}, "
                         f"{summary.get('status')!r}")
    path = Path(directory) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(summary, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def command_of(summary: dict[str, Any]) -> str | None:
    """The command that wrote ``summary``, or ``None`` for a summary metarun did not write.

    Summaries of older metarun versions have no ``command``: a training run's has a
    ``status``; an ensemble's (``metarun-ensemble``) a ``method``.
    """
    command = summary.get("command")
    if command is not None:
        return command if command in COMMANDS else None
    if "method" in summary:
        return EVAL
    return TRAIN if "status" in summary else None


def command_of_dir(directory: Path, summary: dict[str, Any] | None) -> str | None:
    """The command whose job wrote ``directory`` (``summary``: its :func:`read_summary`).

    A training run's own files (``checkpoints/``, ``metrics.jsonl``) make it a training run
    whatever its summary says; otherwise its summary names the command. A job killed before
    its first summary has only the ``.hydra/config.yaml`` it claimed the directory with:
    ``metarun-eval``'s config names a ``checkpoint``, a training config does not.
    """
    if (directory / "checkpoints").is_dir() or (directory / "metrics.jsonl").is_file():
        return TRAIN
    if summary:
        return command_of(summary)
    config = directory / ".hydra" / "config.yaml"
    try:
        text = config.read_text(encoding="utf-8")
    except OSError:
        return None
    return EVAL if re.search(r"^checkpoint:", text, re.MULTILINE) else TRAIN


def is_training_summary(summary: dict[str, Any]) -> bool:
    """Whether ``summary`` was written by a ``metarun`` training run."""
    return command_of(summary) == TRAIN


def describe(summary: dict[str, Any]) -> str:
    """What wrote ``summary``, in words."""
    command = command_of(summary)
    if command == EVAL:
        return ("a metarun-eval ensemble result" if "method" in summary
                else "a metarun-eval result")
    if command == TRAIN:
        return f"a {summary.get('status', 'unknown')} metarun run"
    return "a summary.json that metarun did not write"


def objective(summary: dict[str, Any]) -> float:
    """A job's sweep objective: a training run's best validation value of its metric, an
    evaluation's result (the direction is ``summary["higher_is_better"]``)."""
    metric = summary["metric"]
    if command_of(summary) == TRAIN:
        return float(summary["val"][f"best_{metric}"])
    return float(summary["result"][metric])


@dataclass
class RunResult:
    """What a job returns: the summary it wrote, and where."""

    summary: dict[str, Any]
    output_dir: str

    @property
    def objective(self) -> float:
        """The sweep objective (:func:`objective`)."""
        return objective(self.summary)


#: The keys of an experiment's ``paper`` entry: what was published, where, for which shape.
PAPER_KEYS = ("metric", "value", "ci95", "source", "ways", "shots")


def paper_section(paper: dict[str, Any] | None, metric: str, score: float, ways: int,
                  shots: int) -> dict[str, Any] | None:
    """``summary.json``'s ``paper``: the published number beside this run's ``score``, and
    ``difference`` (this run minus the paper, in the metric's unit) when the two measure the
    same thing (metric and evaluation shape); otherwise ``difference`` is ``None`` and
    ``not_comparable`` says why."""
    if not paper:
        return None
    section = {k: paper.get(k) for k in PAPER_KEYS}
    why = None
    if paper.get("metric") != metric:
        why = f"the paper reports {paper.get('metric')}, this run {metric}"
    elif (paper.get("ways"), paper.get("shots")) != (ways, shots):
        why = (f"the paper's number is {paper.get('ways')}-way {paper.get('shots')}-shot; "
               f"this run was tested {ways}-way {shots}-shot")
    finite = isinstance(score, (int, float)) and math.isfinite(score)
    section["difference"] = None if why or not finite else score - float(paper["value"])
    if why:
        section["not_comparable"] = why
    return section
