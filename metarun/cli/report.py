"""``metarun-report``: one table of every run under the given run or sweep directories.

    metarun-report outputs/multirun/2026-11-24/10-00-00
    metarun-report runs/a runs/b --by algo --x task.shots --out reports/shots

Prints a table of every run (the overrides that differ between runs, test score ± 95% CI,
best validation score, steps, time, device; failed and unfinished runs marked), then, when
runs differ only by seed, a table grouped over the swept keys with the mean and standard
deviation of the per-seed test means. Writes ``report.csv``, ``groups.csv``, ``report.md`` and
``comparison.png`` to ``--out`` (default: the first directory given). Long tables show the
``--top`` runs by validation score. An Optuna search's sweep directory (or ``--study STORAGE``)
also gets the study's report: ``study.md``, ``study_trials.csv`` and Optuna's plots.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metarun.errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK
from metarun.report.output import TOP, comparison_x, print_report, write_report
from metarun.report.table import build_report

#: ``--strict``: some runs did not complete.
EXIT_INCOMPLETE = EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metarun-report", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="*", metavar="DIR",
                        help="run directories, sweep directories, or folders holding them")
    parser.add_argument("--by", action="append", metavar="KEY",
                        help="group by this override (repeatable; default: every swept key "
                             "but seed)")
    parser.add_argument("--x", metavar="KEY", help="x axis of comparison.png (default: "
                        "task.shots when swept, else the first numeric grouping key)")
    parser.add_argument("--out", metavar="DIR", help="where the report files go (default: "
                        "the first DIR, else here)")
    parser.add_argument("--top", type=int, default=TOP, metavar="N",
                        help=f"tables show the N best runs by validation score when there are "
                             f"more (default {TOP}; 0: all); report.csv has every run")
    parser.add_argument("--study", metavar="STORAGE", help="also report this Optuna study: a "
                        "database URL or a journal file (a search's sweep directory is found "
                        "by itself)")
    parser.add_argument("--study-name", metavar="NAME",
                        help="the study, when the storage holds several")
    parser.add_argument("--curves", action="store_true",
                        help="also (re)draw every run's learning_curve.png from metrics.jsonl")
    parser.add_argument("--no-plot", action="store_true", help="skip comparison.png")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when any run did not complete (pruned trials did)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.dirs and not args.study:
        print("metarun-report: error: give a run or sweep directory, or --study STORAGE",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    out = Path(args.out or (args.dirs[0] if args.dirs else "."))
    status = _runs(args, out) if args.dirs else EXIT_OK
    if status == EXIT_BAD_INPUT:
        return status
    from metarun.report.study import report_study, study_of_sweep

    found = {s: False for d in args.dirs if (s := study_of_sweep(Path(d))) is not None}
    if args.study:
        found[(args.study, args.study_name)] = True  # asked for: an error if it fails
    for (storage, name), asked in found.items():
        try:
            written = report_study(storage, name, out)
        except (ImportError, OSError, ValueError) as e:
            print(f"metarun-report: {'error: ' if asked else ''}study {name or ''} in "
                  f"{storage}: {e}", file=sys.stderr)
            if asked:
                return EXIT_BAD_INPUT
            continue
        print("wrote " + ", ".join(str(p) for p in written.values()))
    return status


def _runs(args: argparse.Namespace, out: Path) -> int:
    """The report of the runs below ``args.dirs``; its exit status."""
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

        for r in (r for r in runs if r.trained):  # an evaluation has no learning curve
            try:
                plot_learning_curve(r.path)
            except (OSError, ValueError) as e:
                print(f"metarun-report: no learning curve for {r.path}: {e}", file=sys.stderr)
    print_report(report, f"{len(report.rows)} runs", top=args.top)
    for row in report.rows:
        if row.run.failed and row.run.error:
            print(f"{row.name}: {row.run.status}: {row.run.error}")
    try:
        written = write_report(report, out, x=args.x, plot=not args.no_plot, top=args.top)
    except OSError as e:
        print(f"metarun-report: error: cannot write the report to {out}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("wrote " + ", ".join(str(p) for p in written.values()))
    incomplete = sum(r.run.failed for r in report.rows)  # a pruned trial ended as meant
    return EXIT_INCOMPLETE if args.strict and incomplete else EXIT_OK


def console() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    console()

