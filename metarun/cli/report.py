"""``metarun-report``: one table of every run under the given run or sweep directories.

    metarun-report outputs/multirun/2026-11-24/10-00-00
    metarun-report runs/a runs/b --by algo --x task.shots --out reports/shots

Prints a table of every run (the overrides that differ between runs, test score ± 95% CI,
best validation score, steps, time, device; failed and unfinished runs marked), then, when
runs differ only by seed, a table grouped over the swept keys with the mean and standard
deviation of the per-seed test means. Writes ``report.csv``, ``groups.csv``, ``report.md`` and
``comparison.png`` to ``--out`` (default: the first directory given).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metarun.errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK
from metarun.report.output import comparison_x, print_report, write_report
from metarun.report.table import build_report

#: ``--strict``: some runs did not complete.
EXIT_INCOMPLETE = EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="metarun-report", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="run directories, sweep directories, or folders holding them")
    parser.add_argument("--by", action="append", metavar="KEY",
                        help="group by this override (repeatable; default: every swept key "
                             "but seed)")
    parser.add_argument("--x", metavar="KEY", help="x axis of comparison.png (default: "
                        "task.shots when swept, else the first numeric grouping key)")
    parser.add_argument("--out", metavar="DIR", help="where the report files go (default: "
                        "the first DIR)")
    parser.add_argument("--curves", action="store_true",
                        help="also (re)draw every run's learning_curve.png from metrics.jsonl")
    parser.add_argument("--no-plot", action="store_true", help="skip comparison.png")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when any run did not complete")
    args = parser.parse_args(argv)

    from metarun.report.runs import find_runs

    try:
        runs = find_runs(args.dirs)
        report = build_report(runs, by=args.by)
        comparison_x(report, args.x)
    except (OSError, ValueError) as e:
        print(f"metarun-report: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT

    if args.curves:
        from metarun.report.plots import plot_learning_curve

        for r in runs:
            try:
                plot_learning_curve(r.path)
            except (OSError, ValueError) as e:
                print(f"metarun-report: no learning curve for {r.path}: {e}", file=sys.stderr)

    print_report(report, f"{len(report.rows)} runs")
    for row in report.rows:
        if not row.run.completed and row.run.error:
            print(f"{row.name}: {row.run.status}: {row.run.error}")
    out = Path(args.out) if args.out else Path(args.dirs[0])
    try:
        written = write_report(report, out, x=args.x, plot=not args.no_plot)
    except OSError as e:
        print(f"metarun-report: error: cannot write the report to {out}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("wrote " + ", ".join(str(p) for p in written.values()))
    incomplete = sum(not r.run.completed for r in report.rows)
    return EXIT_INCOMPLETE if args.strict and incomplete else EXIT_OK


def console() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    console()

