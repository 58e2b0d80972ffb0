"""Make ``docs/results.md``: run every recipe of ``bench/results.yaml`` at its budget, one after
another, and write the table from the runs' summaries.

    python bench/results.py [--rows bench/results.yaml] [--root results] [--out docs/results.md]
                            [--records bench/results.json] [--only NAME ...] [--device cpu]
                            [--budget-scale 1.0] [--dry-run] [--table-only]

Rows run in order, one process at a time: two torch processes on two cores slow each other
about tenfold. A row whose run directory (``<root>/<name>``) already holds a completed run
of the row's recipe is not run again, so an interrupted build goes on where it stopped when
the same command is run again; a row that fails is reported as failed in the table and the
next row runs. ``--only`` runs some rows. The recipe is the config the row's command composes
now (``bench/_recipes.py``), so a changed config file counts even when the command line did
not: a completed run of another recipe is moved aside (``<name>.stale-<time>``) and the row
runs again.

Every row's result is also kept in ``bench/results.json`` (``--records``), committed with the
table: its command, the date, the commit and the machine it ran on, and the part of its summary
the table shows. A row that is not run again is written from that record, so rerunning one row
(``--only``) on a machine without the other rows' run directories keeps them, each with the date
and commit it really ran at. A record whose command is no longer the row's (the row or its
budget changed) is not shown, and neither is one whose recipe fingerprint
(``recipe_sha256``) is not the recipe's now: the row is listed as not run. (Records written
before the fingerprint have none and are shown.)

Each row of the table: the method, the dataset and evaluation shape, the command that
reproduces it, the budget, the run's wall time and steps, the test mean with its 95% CI, the
published number with its source and this run's difference from it (``summary.json``'s
``paper``, from the experiment file or the row), the date and commit it ran at, and the hardware.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from _provenance import RUN_PATHS, SUMMARY_KEYS, TEST_KEYS, commit, hardware, load_records
from _recipes import changed_recipe, fingerprint, recipe

from metarun.configs import parse_duration
from metarun.summary import read_summary
from metarun.tasktypes import BY_METRIC

HERE = Path(__file__).resolve().parent
ROW_KEYS = {"name", "method", "args", "budget", "paper", "note"}


@dataclass
class Row:
    """One recipe: a metarun command line (without ``device`` and the run directory)."""

    name: str
    method: str
    args: list[str]
    budget: str | None = None
    paper: dict[str, Any] | None = None
    note: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    data: str = ""
    ran: dict[str, str] = field(default_factory=dict)  # date, commit, hardware
    config: dict[str, Any] | None = None  # the recipe its command composes now


def load_rows(path: Path) -> list[Row]:
    """The rows of a results file; a row with an unknown key, no name or no args is refused."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    rows = []
    for i, raw in enumerate(spec.get("rows") or []):
        unknown = set(raw) - ROW_KEYS
        if unknown or not raw.get("name") or not raw.get("args"):
            raise SystemExit(f"{path}: row {i + 1} needs name, method and args (and may have "
                             f"budget, paper, note); got {sorted(raw)}")
        if raw.get("budget") is not None:
            parse_duration(raw["budget"], f"row {raw['name']}: budget")
        rows.append(Row(name=str(raw["name"]), method=str(raw.get("method", raw["name"])),
                        args=[str(a) for a in raw["args"]], budget=raw.get("budget"),
                        paper=raw.get("paper"), note=str(raw.get("note") or "")))
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: row names must be unique (they name the run directories)")
    return rows


def budget_of(row: Row, scale: float) -> float | None:
    """The row's ``train.max_time`` in seconds, times ``scale`` (``None``: no budget)."""
    seconds = parse_duration(row.budget)
    return None if seconds is None else seconds * scale


def command(row: Row, device: str, scale: float) -> list[str]:
    """The metarun command line that reproduces the row (without the run directory)."""
    args = ["metarun", *row.args, f"device={device}"]
    seconds = budget_of(row, scale)
    if seconds is not None:
        args.append(f"train.max_time={_duration(seconds)}")
    if row.paper:
        inner = ",".join(f"{k}:{_hydra_value(v)}" for k, v in row.paper.items())
        args.append(f"paper={{{inner}}}")
    return args


def command_line(row: Row, device: str, scale: float) -> str:
    """:func:`command` as one line: what the table shows and a record is keyed by."""
    return " ".join(command(row, device, scale))


def _hydra_value(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'"
    return "null" if value is None else str(value)


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def run_row(row: Row, root: Path, device: str, scale: float) -> tuple[dict[str, Any], bool]:
    """Run the row unless its directory holds a completed run of its recipe; its summary, and
    whether it ran now."""
    out = root / row.name
    summary = read_summary(out) or {}
    if summary.get("status") == "completed":
        changed = changed_recipe(out, row.config)
        if not changed:
            print(f"[results] {row.name}: completed earlier, kept", flush=True)
            return summary, False
        stale = out.with_name(f"{row.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(out, stale)
        summary = {}
        print(f"[results] {row.name}: the completed run was of another recipe (it differs in "
              f"{', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}); moved to "
              f"{stale.name}, running the row again", flush=True)
    argv = [*command(row, device, scale), f"hydra.run.dir={out}"]
    print(f"[results] {row.name}: {' '.join(argv)}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with open(root / f"{row.name}.log", "a", encoding="utf-8") as log:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    summary = read_summary(out) or {}
    if proc.returncode != 0:
        print(f"[results] {row.name}: exit status {proc.returncode}; see {log.name}",
              flush=True)
    return summary, True


def dataset_of(run_dir: Path) -> str:
    """The dataset class a run used (from its ``.hydra/config.yaml``)."""
    try:
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text("utf-8"))
        return str(config["data"]["_target_"]).rsplit(".", 1)[-1]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return "?"


def record_of(row: Row, out: Path, device: str, scale: float,
              at: str | None = None) -> dict[str, Any]:
    """The row's record: its command, when, at which commit (``at``: the checkout's when the
    run started; else its commit now) and where it ran, and the part of its summary the
    table shows."""
    kept = {k: row.summary[k] for k in SUMMARY_KEYS if k in row.summary}
    if isinstance(row.summary.get("test"), dict):
        kept["test"] = {k: v for k, v in row.summary["test"].items() if k in TEST_KEYS}
    try:
        when = datetime.date.fromtimestamp((out / "summary.json").stat().st_mtime)
    except OSError:
        when = datetime.date.today()
    return {"command": command_line(row, device, scale), "date": when.isoformat(),
            "commit": at or commit(HERE.parent), "hardware": hardware(device), "data": row.data,
            "recipe_sha256": fingerprint(row.config), "summary": kept}


def use_record(row: Row, record: dict[str, Any]) -> None:
    """Show the row from ``record`` (made by the row's present command)."""
    row.summary, row.data = dict(record.get("summary") or {}), str(record.get("data", ""))
    row.ran = {k: str(record.get(k, "?")) for k in ("date", "commit", "hardware")}


def cells(row: Row, device: str, scale: float) -> list[str]:
    """The row's cells: method, setting, command, budget, wall time, steps, ours, paper,
    source, difference, and when it ran."""
    s = row.summary
    shown = command_line(row, device, scale)
    seconds = budget_of(row, scale)
    budget = _duration(seconds) if seconds is not None else "its steps"
    ran = f"{row.ran.get('date', '?')}, `{row.ran.get('commit', '?')}`"
    if s.get("status") != "completed":
        status = f"{s.get('status', 'not run').upper()} (`{row.name}.log`)"
        return [row.method, row.data or "?", f"`{shown}`", budget, "", "", status, "", "", "",
                ran]
    task_type = BY_METRIC[s["metric"]]
    test, ev = s["test"], s["eval_task"]
    setting = f"{row.data} {task_type.shape(ev['ways'], ev['shots'])}"
    steps = f"{s['steps']:,}" + (" (budget)" if s.get("stopped") == "max_time" else "")
    ours = task_type.format(test[s["metric"]], test["ci95"])
    paper = s.get("paper") or {}
    published = task_type.format(paper["value"], paper.get("ci95")) if paper else ""
    difference = paper.get("difference") if paper else None
    diff = "" if difference is None else (
        ("+" if difference >= 0 else "") + task_type.format(difference))
    return [row.method, setting, f"`{shown}`", budget, f"{s['seconds']:.0f} s", steps, ours,
            published, paper.get("source", "") if paper else "", diff, ran]


HEADER = ["method", "setting", "command", "budget", "wall time", "steps",
          "ours (mean ± 95% CI)", "paper", "source", "difference", "ran (date, commit)"]


def render(rows: list[Row], device: str, scale: float, rows_file: Path) -> str:
    """``docs/results.md``'s text."""
    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    shown = [r for r in rows if r.summary]
    episodes = sorted({r.summary.get("test", {}).get("episodes") for r in shown
                       if r.summary.get("status") == "completed"} - {None})
    machines = sorted({r.ran.get("hardware", "?") for r in shown})
    table = []
    for r in shown:
        values = cells(r, device, scale)
        if len(machines) > 1:  # say which machine each row ran on
            values[-1] += f" [{machines.index(r.ran.get('hardware', '?')) + 1}]"
        table.append(line(values) + "\n")
    where = machines[0] if len(machines) == 1 else "; ".join(
        f"[{i}] {m}" for i, m in enumerate(machines, 1))
    parts = [
        "# Results\n\n",
        f"Written by `python bench/results.py` from `{rows_file.name}` (last written "
        f"{datetime.date.today().isoformat()}); each row ran at the date and commit it shows, "
        f"on {where or '-'}. One seed (`seed=0`) per row. Test: the run's fixed seeded test "
        f"episodes ({', '.join(map(str, episodes)) or '-'} per run), mean ± 95% CI, of the "
        "checkpoint with the best validation score. Each row's command reproduces it; `budget` "
        "is `train.max_time` (a run also ends at its `train.iterations`); `(budget)` marks a "
        "run the budget stopped. The difference is ours minus the paper's, in points. "
        "`+changes`: when the run started, the checkout had uncommitted changes to its code "
        f"or configuration ({', '.join(RUN_PATHS)}).\n\n",
        line(HEADER) + "\n", line(["---"] * len(HEADER)) + "\n", *table,
    ]
    notes = [f"- {r.method} (`{r.name}`): {r.note}\n" for r in shown if r.note]
    if notes:
        parts += ["\n## Notes\n\n", *notes]
    missing = [r.name for r in rows if not r.summary]
    if missing:
        parts.append(f"\nNot run yet with their present commands: "
                     f"{', '.join(f'`{m}`' for m in missing)} (`python bench/results.py "
                     f"--only {' '.join(missing)}`).\n")
    return "".join(parts)


def build(rows: list[Row], args: argparse.Namespace) -> int:
    """Run the wanted rows and fill every row from its run or its record; the failed count."""
    records = load_records(args.records)
    failed = 0
    for row in rows:
        row.config = recipe(command(row, args.device, args.budget_scale)[1:])
        wanted = not args.table_only and (args.only is None or row.name in args.only)
        out = args.root / row.name
        ran, at = False, None
        if wanted:
            # the checkout the run starts from: edits made while it runs are not its code
            at = commit(HERE.parent)
            row.summary, ran = run_row(row, args.root, args.device, args.budget_scale)
        else:
            row.summary = read_summary(out) or {}
            if row.summary and changed_recipe(out, row.config):
                row.summary = {}  # a run of another recipe is not this row's result
        if ran and not row.summary:  # it failed before writing a summary
            row.summary = {"status": "failed"}
        row.data = dataset_of(out)
        line = command_line(row, args.device, args.budget_scale)
        kept = records.get(row.name, {})
        same = kept.get("command") == line and kept.get("recipe_sha256") in (
            None, fingerprint(row.config))
        if row.summary and (ran or not same):  # a new result, or one the record lacks
            records[row.name] = record_of(row, out, args.device, args.budget_scale,
                                          at if ran else None)
            same = True
        if same:  # a record made by another command is not this row's result
            use_record(row, records[row.name])
        failed += wanted and row.summary.get("status") != "completed"
    args.records.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n", "utf-8")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=Path, default=HERE / "results.yaml")
    parser.add_argument("--root", type=Path, default=Path("results"),
                        help="where each row's run directory goes (default: ./results)")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "results.md")
    parser.add_argument("--records", type=Path, default=HERE / "results.json",
                        help="each row's kept result (default: bench/results.json)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these rows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply every budget (a quick trial of the whole table)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: write the table from the runs and records there are")
    args = parser.parse_args(argv)
    rows = load_rows(args.rows)
    unknown = set(args.only or []) - {r.name for r in rows}
    if unknown:
        parser.error(f"--only: no row named {', '.join(sorted(unknown))}; rows: "
                     f"{', '.join(r.name for r in rows)}")
    if args.dry_run:
        for row in rows:
            if args.only is None or row.name in args.only:
                print(command_line(row, args.device, args.budget_scale))
        return 0
    args.root.mkdir(parents=True, exist_ok=True)
    failed = build(rows, args)
    args.out.write_text(render(rows, args.device, args.budget_scale, args.rows), "utf-8")
    print(f"[results] wrote {args.out} and {args.records}"
          + (f"; {failed} row(s) failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
