"""``docs/results.md``'s text from the rows of ``bench/results.py`` once their runs or records
are in: one line per row, and one line per row with seeds, over its seeds."""

from __future__ import annotations

import datetime
import statistics
from pathlib import Path
from typing import Any

from _provenance import RUN_PATHS
from _rows import Row, budget_of, command_line, duration

from metarun.tasktypes import BY_METRIC, TaskType

HEADER = ["method", "setting", "command", "budget", "wall time", "steps",
          "ours (mean ± 95% CI; seeds: mean ± sd)", "paper", "source", "difference",
          "ran (date, commit)"]


def _completed(run: Row) -> bool:
    return run.summary.get("status") == "completed"


def _status(run: Row) -> str:
    if not run.summary:
        return "not run yet"
    return f"{run.summary.get('status', 'not run').upper()} (`{run.name}.log`)"


def _published(s: dict[str, Any], value: float) -> list[str]:
    """The paper, source and difference cells of a completed run's summary ``s`` for our
    ``value``: the difference is ours minus the paper's, where the run found the two
    comparable (the same metric and evaluation shape: ``metarun.summary.paper_section``)."""
    task_type, paper = BY_METRIC[s["metric"]], s.get("paper") or {}
    if not paper:
        return ["", "", ""]
    difference = None if paper.get("difference") is None else value - paper["value"]
    return [task_type.format(paper["value"], paper.get("ci95")), paper.get("source", ""),
            "" if difference is None else
            ("+" if difference >= 0 else "") + task_type.format(difference)]


def _steps(runs: list[Row]) -> str:
    steps = sorted({r.summary["steps"] for r in runs})
    text = f"{steps[0]:,}" + (f"-{steps[-1]:,}" if len(steps) > 1 else "")
    return text + (" (budget)" if any(r.summary.get("stopped") == "max_time"
                                      for r in runs) else "")


def _over_seeds(row: Row, scores: list[float], task_type: TaskType) -> str:
    """A row with seeds: the mean ± sample standard deviation of its completed seeds' test
    means, each of them, and the seeds that did not complete."""
    n = len(scores)
    text = (task_type.format(statistics.fmean(scores), statistics.stdev(scores)) if n > 1
            else task_type.format(scores[0]))
    text += f" over {n} seed{'s' if n > 1 else ''} ("
    text += ", ".join(task_type.format(v) for v in scores) + ")"
    missing = [f"seed {r.seed}: {_status(r)}" for r in row.runs if not _completed(r)]
    return text + ("; " + "; ".join(missing) if missing else "")


def cells(row: Row, shown: str, budget: str, ran: str) -> list[str]:
    """The cells of a row run once (or of a row with seeds, over the seeds that completed)."""
    done = [r for r in row.runs if _completed(r)]
    if not done:
        status = _status(next((r for r in row.runs if r.summary), row.runs[0]))
        return [row.method, row.data or "?", f"`{shown}`", budget, "", "", status, "", "", "",
                ran]
    s = done[0].summary
    task_type = BY_METRIC[s["metric"]]
    setting = f"{done[0].data} {task_type.shape(s['eval_task']['ways'], s['eval_task']['shots'])}"
    scores = [r.summary["test"][s["metric"]] for r in done]
    seconds = statistics.fmean(r.summary["seconds"] for r in done)
    if not row.seeds:
        ours, wall = task_type.format(scores[0], s["test"]["ci95"]), f"{seconds:.0f} s"
    else:
        ours, wall = _over_seeds(row, scores, task_type), f"{seconds:.0f} s (mean)"
    return [row.method, setting, f"`{shown}`", budget, wall, _steps(done), ours,
            *_published(s, statistics.fmean(scores)), ran]


def _ran(row: Row, machines: list[str]) -> str:
    """Each date and commit the row's runs ran at (with their machine, when several are)."""
    seen: dict[str, None] = {}
    for r in row.runs:
        if not r.summary:
            continue
        text = f"{r.ran.get('date', '?')}, `{r.ran.get('commit', '?')}`"
        if len(machines) > 1:  # say which machine each run was on
            text += f" [{machines.index(r.ran.get('hardware', '?')) + 1}]"
        seen[text] = None
    return "; ".join(seen) or "?, `?`"


def render(rows: list[Row], device: str, scale: float, rows_file: Path) -> str:
    """``docs/results.md``'s text."""
    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    shown = [r for r in rows if any(run.summary for run in r.runs)]
    runs = [run for r in shown for run in r.runs if run.summary]
    episodes = sorted({run.summary.get("test", {}).get("episodes") for run in runs
                       if _completed(run)} - {None})
    machines = sorted({run.ran.get("hardware", "?") for run in runs})
    table = []
    for r in shown:
        seconds = budget_of(r, scale)
        budget = duration(seconds) if seconds is not None else "its steps"
        table.append(line(cells(r, command_line(r, device, scale), budget,
                                _ran(r, machines))) + "\n")
    where = machines[0] if len(machines) == 1 else "; ".join(
        f"[{i}] {m}" for i, m in enumerate(machines, 1))
    parts = [
        "# Results\n\n",
        f"Written by `python bench/results.py` from `{rows_file.name}` (last written "
        f"{datetime.date.today().isoformat()}); each row ran at the date and commit it shows, "
        f"on {where or '-'}. Test: the run's fixed seeded test episodes "
        f"({', '.join(map(str, episodes)) or '-'} per run), mean ± 95% CI, of the checkpoint "
        "with the best validation score. A row without a `seed=` list ran once, at `seed=0`; "
        "a row with one (a multirun, `-m`) shows the mean ± sample standard deviation of its "
        "seeds' test means, then each seed's, and its mean wall time per seed; its difference "
        "is that mean's. Each row's command reproduces it; `budget` is `train.max_time` (a run "
        "also ends at its `train.iterations`); `(budget)` marks a run the budget stopped. The "
        "difference is ours minus the paper's, in points. `+changes`: when the run started, "
        "the checkout had uncommitted changes to its code or configuration "
        f"({', '.join(RUN_PATHS)}).\n\n",
        line(HEADER) + "\n", line(["---"] * len(HEADER)) + "\n", *table,
    ]
    notes = [f"- {r.method} (`{r.name}`): {r.note}\n" for r in shown if r.note]
    if notes:
        parts += ["\n## Notes\n\n", *notes]
    missing = [run.name for r in rows for run in r.runs if not run.summary]
    if missing:
        parts.append(f"\nNot run yet with their present commands: "
                     f"{', '.join(f'`{m}`' for m in missing)} (`python bench/results.py "
                     f"--only {' '.join(missing)}`).\n")
    return "".join(parts)
