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
runs again. A row with ``seeds: [0, 1, 2]`` runs once per seed, in ``<root>/<name>-seed<N>``
(each kept, recorded and ``--only``-able by that name), and shows the mean and spread over
them (``bench/_table.py``).

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
from pathlib import Path
from typing import Any

import yaml
from _provenance import SUMMARY_KEYS, TEST_KEYS, commit, hardware, load_records
from _recipes import changed_recipe, fingerprint, recipe
from _rows import Row, command, command_line, load_rows, run_names, selected
from _table import render

from metarun.summary import read_summary

HERE = Path(__file__).resolve().parent


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


def fill(row: Row, wanted: bool, records: dict[str, Any], args: argparse.Namespace) -> bool:
    """Run one run of a row if ``wanted`` and fill it from its run or its record (updating
    ``records``); whether it was wanted and did not complete."""
    row.config = recipe(command(row, args.device, args.budget_scale)[1:])
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
    return wanted and row.summary.get("status") != "completed"


def build(rows: list[Row], args: argparse.Namespace) -> int:
    """Run the wanted rows (a row with seeds: each seed's run) and fill every run from its run
    directory or its record; the failed count."""
    records = load_records(args.records)
    failed = 0
    for row in rows:
        for run in row.runs:
            wanted = not args.table_only and selected(row, run, args.only)
            failed += fill(run, wanted, records, args)
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
    names = run_names(rows)
    unknown = set(args.only or []) - set(names)
    if unknown:
        parser.error(f"--only: no row named {', '.join(sorted(unknown))}; rows: "
                     f"{', '.join(names)}")
    if args.dry_run:
        for row in rows:
            for run in row.runs:
                if selected(row, run, args.only):
                    print(command_line(run, args.device, args.budget_scale))
        return 0
    args.root.mkdir(parents=True, exist_ok=True)
    failed = build(rows, args)
    args.out.write_text(render(rows, args.device, args.budget_scale, args.rows), "utf-8")
    print(f"[results] wrote {args.out} and {args.records}"
          + (f"; {failed} row(s) failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
