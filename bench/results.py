"""Make ``docs/results.md``: run every recipe of ``bench/results.yaml`` at its budget, one after
another, and write the table from the runs' summaries.

    python bench/results.py [--rows bench/results.yaml] [--root results] [--out docs/results.md]
                            [--only NAME ...] [--device cpu] [--budget-scale 1.0] [--dry-run]
                            [--table-only]

Rows run in order, one process at a time: two torch processes on two cores slow each other
about tenfold. A row whose run directory (``<root>/<name>``) already holds a completed run is
not run again, so an interrupted build goes on where it stopped when the same command is run
again; a row that fails is reported as failed in the table and the next row runs. ``--only``
runs some rows; the table still lists every row whose run directory holds a result.

Each row of the table: the method, the dataset and evaluation shape, the command that
reproduces it, the budget, the run's wall time and steps, the test mean with its 95% CI, the
published number with its source and this run's difference from it (``summary.json``'s
``paper``, from the experiment file or the row), the hardware, the date and the commit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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


def _hydra_value(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'"
    return "null" if value is None else str(value)


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def run_row(row: Row, root: Path, device: str, scale: float) -> dict[str, Any]:
    """Run the row unless its directory holds a completed run; its summary."""
    out = root / row.name
    summary = read_summary(out) or {}
    if summary.get("status") == "completed":
        print(f"[results] {row.name}: completed earlier, kept", flush=True)
        return summary
    argv = [*command(row, device, scale), f"hydra.run.dir={out}"]
    print(f"[results] {row.name}: {' '.join(argv)}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with open(root / f"{row.name}.log", "a", encoding="utf-8") as log:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    summary = read_summary(out) or {}
    if proc.returncode != 0:
        print(f"[results] {row.name}: exit status {proc.returncode}; see {log.name}",
              flush=True)
    return summary


def dataset_of(run_dir: Path) -> str:
    """The dataset class a run used (from its ``.hydra/config.yaml``)."""
    try:
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text("utf-8"))
        return str(config["data"]["_target_"]).rsplit(".", 1)[-1]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return "?"


def hardware(device: str) -> str:
    """The machine in words: CPU model, cores, torch and its threads (and the GPU on cuda)."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = (f"{model}, {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads")
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def commit() -> str:
    """The checkout's commit (``+changes`` when the tree differs from it)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True,
                              check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def cells(row: Row, device: str, scale: float) -> list[str]:
    """The row's cells: method, setting, command, budget, wall time, steps, ours, paper,
    source, difference."""
    s = row.summary
    shown = " ".join(command(row, device, scale))
    seconds = budget_of(row, scale)
    budget = _duration(seconds) if seconds is not None else "its steps"
    if s.get("status") != "completed":
        status = f"{s.get('status', 'not run').upper()} (`{row.name}.log`)"
        return [row.method, row.data or "?", f"`{shown}`", budget, "", "", status, "", "", ""]
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
            published, paper.get("source", "") if paper else "", diff]


HEADER = ["method", "setting", "command", "budget", "wall time", "steps",
          "ours (mean ± 95% CI)", "paper", "source", "difference"]


def render(rows: list[Row], device: str, scale: float, rows_file: Path) -> str:
    """``docs/results.md``'s text."""
    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    shown = [r for r in rows if r.summary]
    episodes = sorted({r.summary.get("test", {}).get("episodes") for r in shown
                       if r.summary.get("status") == "completed"} - {None})
    parts = [
        "# Results\n\n",
        f"Written by `python bench/results.py` from `{rows_file.name}` on "
        f"{datetime.date.today().isoformat()}, commit `{commit()}`, on {hardware(device)}. "
        f"One seed (`seed=0`) per row. Test: the run's fixed seeded test episodes "
        f"({', '.join(map(str, episodes)) or '-'} per run), mean ± 95% CI, of the checkpoint "
        "with the best validation score. Each row's command reproduces it; `budget` is "
        "`train.max_time` (a run also ends at its `train.iterations`); `(budget)` marks a run "
        "the budget stopped. The difference is ours minus the paper's, in points.\n\n",
        line(HEADER) + "\n", line(["---"] * len(HEADER)) + "\n",
        *(line(cells(r, device, scale)) + "\n" for r in shown),
    ]
    notes = [f"- {r.method} (`{r.name}`): {r.note}\n" for r in shown if r.note]
    if notes:
        parts += ["\n## Notes\n\n", *notes]
    missing = [r.name for r in rows if not r.summary]
    if missing:
        parts.append(f"\nNot run yet: {', '.join(f'`{m}`' for m in missing)} (`python "
                     f"bench/results.py --only {' '.join(missing)}`).\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=Path, default=HERE / "results.yaml")
    parser.add_argument("--root", type=Path, default=Path("results"),
                        help="where each row's run directory goes (default: ./results)")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "results.md")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these rows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply every budget (a quick trial of the whole table)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: write the table from the run directories there are")
    args = parser.parse_args(argv)
    rows = load_rows(args.rows)
    unknown = set(args.only or []) - {r.name for r in rows}
    if unknown:
        parser.error(f"--only: no row named {', '.join(sorted(unknown))}; rows: "
                     f"{', '.join(r.name for r in rows)}")
    args.root.mkdir(parents=True, exist_ok=True)
    failed = 0
    for row in rows:
        wanted = not args.table_only and (args.only is None or row.name in args.only)
        if args.dry_run:
            if wanted:
                print(" ".join(command(row, args.device, args.budget_scale)))
            continue
        out = args.root / row.name
        row.summary = run_row(row, args.root, args.device, args.budget_scale) if wanted \
            else (read_summary(out) or {})
        tried = wanted or (args.root / f"{row.name}.log").exists()
        if tried and not row.summary:  # it failed before writing a summary
            row.summary = {"status": "failed"}
        row.data = dataset_of(out)
        failed += wanted and row.summary.get("status") != "completed"
    if args.dry_run:
        return 0
    args.out.write_text(render(rows, args.device, args.budget_scale, args.rows), "utf-8")
    print(f"[results] wrote {args.out}" + (f"; {failed} row(s) failed" if failed else ""))
    (args.root / "results.json").write_text(json.dumps(
        {r.name: r.summary for r in rows if r.summary}, indent=2) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
