"""Sweep reports and ``metarun-report`` on a real sweep of small sinusoid runs, two of whose
jobs fail (ProtoNet cannot learn regression)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest

from metarun.cli.report import main as report_main
from metarun.report.runs import find_runs
from metarun.report.table import build_report
from tests.helpers import assert_png
from tests.integration.cli import metarun

SINE = ["data=sinusoid", "device=cpu", "train.iterations=6", "train.eval_every=3",
        "train.log_every=2", "eval.val_episodes=4", "eval.test_episodes=6"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> dict[str, object]:
    root = tmp_path_factory.mktemp("sweep")
    proc = metarun(["-m", "algo=maml,reptile,protonet", "seed=0,1", *SINE,
                    f"hydra.sweep.dir={root}"], env, root)
    return {"dir": root, "proc": proc}


def summaries(root: Path) -> dict[int, dict[str, object]]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in root.glob("*/summary.json")}


def test_a_sweep_reports_every_job_and_exits_1_for_the_failed_ones(sweep) -> None:  # type: ignore[no-untyped-def]
    root, proc = sweep["dir"], sweep["proc"]
    assert proc.returncode == 1, proc.stderr[-2000:]
    jobs = summaries(root)
    assert sorted(jobs) == list(range(6))
    failed = sorted(n for n, s in jobs.items() if s["status"] == "failed")
    assert failed == [4, 5]  # algo=protonet, seeds 0 and 1
    assert "2 job(s) of the sweep did not complete" in proc.stderr
    assert all("ProtoNet" in str(jobs[n]["error"]) or "classification" in str(jobs[n]["error"])
               for n in failed)
    for name in ("report.csv", "report.md", "groups.csv"):
        assert (root / name).is_file(), name
    assert_png(root / "comparison.png")
    # The table was printed at the end of the sweep, failed jobs marked.
    assert "FAILED" in proc.stdout and "grouped by algo" in proc.stdout


def test_each_run_draws_its_learning_curve(sweep) -> None:  # type: ignore[no-untyped-def]
    root = sweep["dir"]
    for n in range(4):
        assert_png(root / str(n) / "learning_curve.png")


def test_rows_groups_and_seed_aggregates_match_the_summaries(sweep) -> None:  # type: ignore[no-untyped-def]
    root = sweep["dir"]
    jobs = summaries(root)
    report = build_report(find_runs([root]), root=root.resolve())
    assert report.swept == ["algo", "seed"]
    assert report.by == ["algo"]
    assert [r.name for r in report.rows] == [str(n) for n in range(6)]
    assert [r.run.status for r in report.rows] == ["completed"] * 4 + ["failed"] * 2
    groups = {g.keys["algo"]: g for g in report.groups}
    assert sorted(groups) == ["maml", "protonet", "reptile"]
    assert len(groups["protonet"].completed) == 0 and len(groups["protonet"].rows) == 2
    assert math.isnan(groups["protonet"].mean)
    for algo, (a, b) in (("maml", (0, 1)), ("reptile", (2, 3))):
        scores = [float(jobs[n]["test"]["mse"]) for n in (a, b)]  # type: ignore[index]
        assert groups[algo].mean == pytest.approx(statistics.fmean(scores), rel=1e-12)
        assert groups[algo].spread == pytest.approx(statistics.stdev(scores), rel=1e-12)
        assert groups[algo].seeds == [0, 1]


def test_report_command_writes_csv_markdown_and_plot(sweep, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = sweep["dir"]
    jobs = summaries(root)
    assert report_main([str(root), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "6 runs" in printed and "FAILED" in printed
    with open(tmp_path / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["completed"] * 4 + ["failed"] * 2
    assert [r["algo"] for r in rows] == ["maml", "maml", "reptile", "reptile", "protonet",
                                         "protonet"]
    assert float(rows[0]["test"]) == jobs[0]["test"]["mse"]  # type: ignore[index]
    assert rows[0]["steps"] == "6" and rows[0]["device"] == "cpu"
    assert rows[4]["test"] in ("", "nan") and rows[4]["error"]
    with open(tmp_path / "groups.csv", newline="") as f:
        groups = {g["algo"]: g for g in csv.DictReader(f)}
    assert groups["maml"]["completed"] == "2" and groups["protonet"]["completed"] == "0"
    markdown = (tmp_path / "report.md").read_text()
    assert "## Grouped by algo (seeds aggregated)" in markdown
    assert "## Runs that did not complete" in markdown and "`4`: failed" in markdown
    assert_png(tmp_path / "comparison.png")


def test_unfinished_runs_are_marked_with_their_last_step(sweep, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    copy = tmp_path / "runs"
    shutil.copytree(sweep["dir"], copy)
    (copy / "1" / "summary.json").unlink()  # as if the process had been killed
    (record,) = [r for r in find_runs([copy]) if r.path.name == "1"]
    assert record.status == "unfinished" and record.last_step == 6
    assert report_main([str(copy), "--strict", "--no-plot", "--out", str(tmp_path / "r")]) == 1
    assert not (tmp_path / "r" / "comparison.png").exists()
    with open(tmp_path / "r" / "report.csv", newline="") as f:
        row = list(csv.DictReader(f))[1]
    assert row["status"] == "unfinished" and row["steps"] == "6"


def test_damaged_runs_are_listed_never_dropped(sweep, tmp_path: Path,  # type: ignore[no-untyped-def]
                                              caplog: pytest.LogCaptureFixture) -> None:
    copy = tmp_path / "runs"
    shutil.copytree(sweep["dir"], copy)
    (copy / "0" / "summary.json").write_text("garbage")
    (copy / "1" / "summary.json").write_text(json.dumps({"command": "metarun-eval",
                                                         "status": "completed"}))
    summary = json.loads((copy / "2" / "summary.json").read_text())
    (copy / "2" / "summary.json").write_text(json.dumps({**summary, "steps": "x",
                                                         "test": "y"}))
    records = {r.path.name: r for r in find_runs([copy])}
    assert {records[n].status for n in ("0", "1")} == {"damaged"}
    assert "summary.json is damaged" in caplog.text
    assert records["2"].status == "completed"
    assert report_main([str(copy), "--no-plot", "--out", str(tmp_path / "r")]) == 0
    with open(tmp_path / "r" / "report.csv", newline="") as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    assert rows["0"]["status"] == rows["1"]["status"] == "damaged"
    assert rows["2"]["steps"] == "6" and rows["2"]["test"] == "nan"  # from metrics.jsonl


def test_curves_are_redrawn_on_demand(sweep, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    copy = tmp_path / "runs"
    shutil.copytree(sweep["dir"], copy)
    (copy / "0" / "learning_curve.png").unlink()
    assert report_main([str(copy / "0"), "--curves"]) == 0
    assert_png(copy / "0" / "learning_curve.png")


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "no such directory"),
    (["{root}", "--by", "task.shots"], "no run sets task.shots"),
    (["{root}", "--x", "seed"], "--x seed: not a grouping key"),
    (["{empty}"], "no metarun runs found"),
])
def test_report_bad_input_is_one_line_and_exit_2(sweep, tmp_path: Path, args: list[str],  # type: ignore[no-untyped-def]
                                                 message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    paths = {"root": str(sweep["dir"]), "missing": str(tmp_path / "nope"),
             "empty": str(tmp_path / "empty")}
    assert report_main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("metarun-report: error: ") and message in err[0]


def test_a_metarun_eval_sweep_gets_its_report(sweep, tmp_path: Path,  # type: ignore[no-untyped-def]
                                              env: dict[str, str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    root = sweep["dir"]
    proc = metarun(["-m", f"checkpoint={root / '0'},{root / '2'}", "device=cpu",
                    "eval.test_episodes=4", f"hydra.sweep.dir={tmp_path / 'ev'}"], env, tmp_path,
                   name="metarun-eval")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "ev" / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    results = summaries(tmp_path / "ev")
    assert [r["status"] for r in rows] == ["completed", "completed"]
    for n, row in enumerate(rows):  # the table's score is each job's result
        assert float(row["test"]) == pytest.approx(results[n]["result"]["mse"])
        assert row["checkpoint"].endswith(f"/{2 * n}")
    # metarun-report reads the evaluations and the training runs side by side; --curves
    # redraws the training runs' learning curves and leaves the evaluations alone
    assert report_main([str(root), str(tmp_path / "ev"), "--no-plot", "--curves", "--out",
                        str(tmp_path / "both")]) == 0
    assert f"no learning curve for {tmp_path / 'ev'}" not in capsys.readouterr().err
    assert not list((tmp_path / "ev").glob("*/learning_curve.png"))
    with open(tmp_path / "both" / "report.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 8


def test_a_long_table_shows_the_best_runs_and_the_csv_every_run(  # type: ignore[no-untyped-def]
        sweep, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report_main([str(sweep["dir"]), "--top", "2", "--no-plot", "--out",
                        str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "(the 2 best by validation score)" in printed
    assert "... and 4 more runs: every run is in report.csv" in printed
    with open(tmp_path / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    best = sorted((r for r in rows if r["status"] == "completed"),
                  key=lambda r: float(r["best_val"]))[:2]  # MSE: lower is better
    markdown = (tmp_path / "report.md").read_text()
    first = markdown.split("\n\n")[1].splitlines()  # the run table: header, rule, rows
    table = first[2:]
    assert [line.split(" | ")[0].strip("| ") for line in table] == [r["run"] for r in best]
    assert "The 2 best runs by validation score; 4 more are in `report.csv`." in markdown
