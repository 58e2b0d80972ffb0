"""A report's output: the console tables, ``report.csv``, ``groups.csv``, ``report.md`` and
``comparison.png`` (``metarun-report`` and the sweep callback both write through here)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from metarun.report.table import (
    Report,
    group_table,
    markdown_table,
    run_table,
    shown_rows,
    write_csv,
)
from metarun.tasktypes import BY_METRIC

PREFERRED_X = ("task.shots", "task.ways", "train.iterations")


def comparison_x(report: Report, x: str | None) -> str | None:
    """The key on the comparison plot's x axis: ``x``, else a swept numeric key (shots first),
    else the first grouping key; ``None`` when nothing is swept."""
    if x is not None:
        if x not in report.by:
            raise ValueError(f"--x {x}: not a grouping key; grouping keys: "
                             f"{', '.join(report.by) or 'none'}")
        return x
    numeric = [k for k in report.by
               if all(isinstance(g.keys.get(k), (int, float)) for g in report.groups)]
    for key in (*PREFERRED_X, *numeric, *report.by):
        if key in report.by:
            return key
    return None


def draw_comparison(report: Report, x: str, out: Path) -> Path | None:
    """Test score against ``x``, one line per value of the other grouping keys; error bars are
    the spread over seeds (or a single run's 95% CI)."""
    from metarun.report.plots import Series, plot_comparison

    lines: dict[str, list[tuple[Any, float, float]]] = {}
    for g in report.groups:
        if not g.completed:
            continue
        label = ", ".join(f"{k}={g.keys[k]}" for k in report.by if k != x)
        spread = g.spread if len(g.completed) > 1 else g.completed[0].test[1]
        lines.setdefault(label, []).append((g.keys.get(x), g.mean, spread))
    if not lines:
        return None
    metrics = {g.metric for g in report.groups if g.completed}
    metric = metrics.pop() if len(metrics) == 1 else "score"
    seeds = max(len(g.completed) for g in report.groups)
    bars = "sd over seeds" if seeds > 1 else "95% CI"
    task_type = BY_METRIC.get(metric)
    y = f"test {task_type.label}" if task_type else "test score"
    return plot_comparison([Series(k, v) for k, v in lines.items()], x, y, out,
                           title=f"{y} ({bars})", percent=bool(task_type and task_type.percent))


#: Rows a run table shows before it folds (the rest are in report.csv).
TOP = 25


def print_report(report: Report, title: str, top: int | None = TOP) -> None:
    """The run table (runs that did not complete in red; the ``top`` by score when there are
    more) and, when seeds were aggregated, the grouped table."""
    header, body = run_table(report)
    shown, hidden = shown_rows(report, top)
    _print_table(title + (f" (the {top} best by validation score)" if hidden else ""), header,
                 [body[i] for i in shown], failed=[report.rows[i].run.failed for i in shown])
    if hidden:
        print(f"... and {hidden} more runs: every run is in report.csv")
    if report.aggregates:
        _print_table(f"grouped by {', '.join(report.by)}: mean ± sd of per-seed test means",
                     *group_table(report))


def _print_table(title: str, header: list[str], body: list[list[str]],
                 failed: list[bool] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in header:
        table.add_column(column, overflow="fold")
    for i, cells in enumerate(body):
        table.add_row(*cells, style="red" if failed and failed[i] else None)
    # A pipe or a CI log gets the table's full width rather than 80 columns.
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def write_report(report: Report, out: Path, x: str | None = None,
                 plot: bool = True, top: int | None = TOP) -> dict[str, Path]:
    """Write ``report.csv`` (every run), ``report.md`` (the ``top`` by score when there are
    more) and, when there are groups, ``groups.csv`` and ``comparison.png`` to ``out``; return
    what was written."""
    out.mkdir(parents=True, exist_ok=True)
    written = {"csv": out / "report.csv", "md": out / "report.md"}
    write_csv(written["csv"], [r.as_dict() for r in report.rows])
    header, body = run_table(report)
    shown, hidden = shown_rows(report, top)
    parts = ["# metarun report\n\n", markdown_table(header, [body[i] for i in shown])]
    if hidden:
        parts.append(f"\nThe {top} best runs by validation score; {hidden} more are in "
                     "`report.csv`.\n")
    if report.aggregates:
        written["groups"] = out / "groups.csv"
        write_csv(written["groups"], [g.as_dict() for g in report.groups])
        parts += [f"\n## Grouped by {', '.join(report.by)} (seeds aggregated)\n\n",
                  markdown_table(*group_table(report))]
    failed = [r for r in report.rows if r.run.failed]  # pruned trials ended as meant
    if failed:
        parts.append("\n## Runs that did not complete\n\n")
        parts += [f"- `{r.name}`: {r.run.status}" + (f": {r.run.error}" if r.run.error else "")
                  + "\n" for r in failed]
    key = comparison_x(report, x)
    if plot and key is not None:
        png = draw_comparison(report, key, out / "comparison.png")
        if png is not None:
            written["plot"] = png
            parts.append("\n![comparison](comparison.png)\n")
    written["md"].write_text("".join(parts), encoding="utf-8")
    return written
