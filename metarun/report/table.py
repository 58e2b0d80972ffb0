"""Runs to a table: one row per run, and one row per group of runs that differ only by seed."""

from __future__ import annotations

import csv
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metarun.configs import LOCATION_KEYS
from metarun.report.runs import RunRecord
from metarun.tasktypes import BY_METRIC, REGRESSION

#: Overrides that say where things are or how often to log, not what was run: never columns.
IGNORED_KEYS = ("hydra.", *LOCATION_KEYS)
SEED = "seed"


def swept_keys(runs: Sequence[RunRecord]) -> list[str]:
    """The override keys whose value is not the same in every run (in first-seen order)."""
    keys: dict[str, None] = {}
    for r in runs:
        keys.update(dict.fromkeys(r.overrides))
    return [k for k in keys if not k.startswith(IGNORED_KEYS)
            and len({r.overrides.get(k) for r in runs}) > 1]


def _parse(value: str | None) -> Any:
    """An override value as a number when it is one (so 5 sorts after 1 and plots as 5)."""
    if value is None:
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


@dataclass
class Row:
    """One run's line of the report."""

    run: RunRecord
    name: str
    keys: dict[str, Any]

    @property
    def metric(self) -> str:
        return str(self.run.summary.get("metric", ""))

    @property
    def tested(self) -> dict[str, Any]:
        """The summary's test result (a ``metarun-eval`` job's ``result``)."""
        return _section(self.run.summary, "test") or _section(self.run.summary, "result")

    @property
    def test(self) -> tuple[float, float]:
        """The test score and its 95% CI."""
        return _number(self.tested.get(self.metric)), _number(self.tested.get("ci95"))

    @property
    def best_val(self) -> float:
        return _number(_section(self.run.summary, "val").get(f"best_{self.metric}"))

    @property
    def ranking(self) -> tuple[int, float]:
        """Sort key, best first: the best validation score (an evaluation's: its result);
        runs without one last."""
        score = self.best_val if math.isfinite(self.best_val) else self.test[0]
        if not math.isfinite(score):
            return (1, 0.0)
        return (0, -score if self.run.summary.get("higher_is_better", True) else score)

    @property
    def steps(self) -> int | None:
        steps = self.run.summary.get("steps")
        if isinstance(steps, int) and not isinstance(steps, bool):
            return steps
        return self.run.last_step  # missing, or not a step count: what metrics.jsonl says

    @property
    def paper(self) -> tuple[float, float]:
        """The published number the run's experiment names, and this run's difference from
        it (NaN where there is none, or it is not comparable)."""
        paper = _section(self.run.summary, "paper")
        return _number(paper.get("value")), _number(paper.get("difference"))

    @property
    def stopped(self) -> str:
        """Why training stopped, when a time budget did it (``max_time``)."""
        stopped = self.run.summary.get("stopped")
        return stopped if stopped == "max_time" else ""

    def as_dict(self) -> dict[str, Any]:
        score, ci = self.test
        s = self.run.summary
        paper, difference = self.paper
        return {"run": self.name, "status": self.run.status, **self.keys,
                "metric": self.metric, "test": score, "test_ci95": ci,
                "test_median": _number(self.tested.get("median")),
                "test_diverged": self.tested.get("diverged"),
                "best_val": self.best_val, "steps": self.steps, "stopped": self.stopped,
                "paper": paper, "paper_source": _section(s, "paper").get("source"),
                "paper_difference": difference,
                "seconds": s.get("seconds"), "device": s.get("device", ""),
                "error": self.run.error}


@dataclass
class Group:
    """Runs that share every grouping key: the mean of their per-seed test means, and the
    spread (sample standard deviation) of those means."""

    keys: dict[str, Any]
    rows: list[Row] = field(default_factory=list)

    @property
    def completed(self) -> list[Row]:
        return [r for r in self.rows if r.run.completed and math.isfinite(r.test[0])]

    @property
    def metric(self) -> str:
        return next((r.metric for r in self.completed), "")

    @property
    def mean(self) -> float:
        scores = [r.test[0] for r in self.completed]
        return statistics.fmean(scores) if scores else math.nan

    @property
    def spread(self) -> float:
        scores = [r.test[0] for r in self.completed]
        return statistics.stdev(scores) if len(scores) > 1 else math.nan

    @property
    def seeds(self) -> list[Any]:
        return [r.keys.get(SEED, r.run.summary.get("seed")) for r in self.completed]

    def as_dict(self) -> dict[str, Any]:
        return {**self.keys, "metric": self.metric, "runs": len(self.rows),
                "completed": len(self.completed), "seeds": " ".join(map(str, self.seeds)),
                "test_mean": self.mean, "test_std": self.spread,
                "best_val_mean": _mean([r.best_val for r in self.completed])}


def _section(summary: dict[str, Any], key: str) -> dict[str, Any]:
    value = summary.get(key)
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float:
    """A summary's number, or NaN for anything else (a damaged or hand-edited file)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def shown_rows(report: Report, top: int | None) -> tuple[list[int], int]:
    """The rows a long table shows (the ``top`` by score, best first; ``None`` or 0: all, in
    order) and how many it leaves to the CSV."""
    n = len(report.rows)
    if not top or n <= top:
        return list(range(n)), 0
    order = sorted(range(n), key=lambda i: report.rows[i].ranking)
    return order[:top], n - top


@dataclass
class Report:
    """Rows of every run, the swept keys, and the groups over ``by`` (seeds aggregated)."""

    rows: list[Row]
    swept: list[str]
    by: list[str]
    groups: list[Group]

    @property
    def aggregates(self) -> bool:
        """Whether grouping merges anything (otherwise the groups repeat the rows)."""
        return any(len(g.rows) > 1 for g in self.groups)


def build_report(runs: Sequence[RunRecord], by: Sequence[str] | None = None,
                 root: Path | None = None) -> Report:
    """One row per run, with the swept overrides as columns, and groups over ``by``
    (default: every swept key but ``seed``).

    Raises:
        ValueError: no runs, or a ``by`` key that no run sets.
    """
    if not runs:
        raise ValueError("no metarun runs found (a run directory has .hydra/ or summary.json)")
    swept = swept_keys(runs)
    if by is None:
        by = [k for k in swept if k != SEED]
    else:
        unknown = [k for k in by if not any(k in r.overrides for r in runs)]
        if unknown:
            raise ValueError(f"no run sets {', '.join(unknown)}; the swept keys are: "
                             f"{', '.join(swept) or 'none'}")
    columns = list(dict.fromkeys([*swept, *by]))
    if root is None:  # name runs by what tells them apart
        root = Path(os.path.commonpath([r.path for r in runs]))
    rows = []
    for r in runs:
        name = str(r.path.relative_to(root)) if r.path.is_relative_to(root) else str(r.path)
        rows.append(Row(r, r.path.name if name == "." else name,
                        {k: _parse(r.overrides.get(k)) for k in columns}))
    groups: dict[tuple[Any, ...], Group] = {}
    for row in rows:
        key = tuple(row.keys.get(k) for k in by)
        groups.setdefault(key, Group({k: row.keys.get(k) for k in by})).rows.append(row)
    return Report(rows, swept, list(by), list(groups.values()))


def format_score(metric: str, value: float, spread: float | None = None) -> str:
    """A table cell: ``95.20 ± 0.61`` (accuracy in percent, under an ``acc %`` heading) or
    ``0.0123 ± 0.0010``; ``-`` when missing (:meth:`TaskType.format`; a metric that no task
    type reports, such as a failed run's none, as a plain number)."""
    return BY_METRIC.get(metric, REGRESSION).format(value, spread, unit=False)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else "-"
    return str(value)


def _metric_name(metrics: set[str]) -> str:
    names = {m: f"{m} %" if t.percent else m for m, t in BY_METRIC.items()}
    return " / ".join(names.get(m, m) for m in sorted(m for m in metrics if m)) or "score"


def run_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the per-run table, as printed."""
    metric = _metric_name({r.metric for r in report.rows})
    papers = any(math.isfinite(r.paper[0]) for r in report.rows)
    header = ["run", "status", *report.swept, f"test {metric} (95% CI)", f"best val {metric}",
              *(["paper", "Δ paper"] if papers else []), "steps", "time (s)", "device"]
    body = []
    for row in report.rows:
        score, ci = row.test
        s = row.run.summary
        status = row.run.status.upper() if row.run.failed else row.run.status
        paper, difference = row.paper
        cells = [format_score(row.metric, paper), _signed(row.metric, difference)]
        steps = _cell(row.steps) + (" (max_time)" if row.stopped else "")
        body.append([row.name, status, *(_cell(row.keys.get(k)) for k in report.swept),
                     format_score(row.metric, score, ci), format_score(row.metric, row.best_val),
                     *(cells if papers else []), steps, _cell(s.get("seconds")),
                     str(s.get("device", ""))])
    return header, body


def _signed(metric: str, value: float) -> str:
    """A difference with its sign: ``+0.12`` or ``-1.30``."""
    text = format_score(metric, value)
    return f"+{text}" if math.isfinite(value) and value >= 0 else text


def group_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the grouped table (mean ± standard deviation over seeds)."""
    metric = _metric_name({g.metric for g in report.groups})
    header = [*report.by, "seeds", f"test {metric} (mean ± sd over seeds)",
              f"best val {metric} (mean)", "not completed"]
    body = []
    for g in report.groups:
        failed = len(g.rows) - len(g.completed)
        body.append([*(_cell(g.keys.get(k)) for k in report.by), str(len(g.completed)),
                     format_score(g.metric, g.mean, g.spread),
                     format_score(g.metric, _mean([r.best_val for r in g.completed])),
                     str(failed) if failed else ""])
    return header, body


def write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for r in records for k in r))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, body)]) + "\n"
