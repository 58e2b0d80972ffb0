"""A run under a time budget is tested and summarised like any other, and continues when the
budget grows; an experiment's published number appears beside the result in the summary and
the report; test summaries count diverged episodes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from metarun.errors import OutputDirError, RunCompletedError
from metarun.jobs.train import run
from metarun.report.runs import find_runs
from metarun.report.table import build_report, run_table
from tests.helpers import compose_config

SINE = ["device=cpu", "data=sinusoid", "algo=maml", "train.iterations=100000",
        "train.eval_every=50", "train.log_every=50", "eval.val_episodes=4",
        "eval.test_episodes=20"]
PAPER = "paper={metric:mse,value:0.5,ci95:0.02,source:'Finn et al. 2017',ways:1,shots:10}"


def test_a_budgeted_run_is_tested_and_a_larger_budget_continues_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run(compose_config(*SINE, "train.max_time=0.5s"), out).summary
    assert first["status"] == "completed" and first["stopped"] == "max_time"
    assert 0 < first["steps"] < 100000 and first["max_time"] == 0.5
    assert first["train_seconds_total"] >= 0.5 and math.isfinite(first["test"]["mse"])

    with pytest.raises(RunCompletedError):  # the same budget: nothing left to do
        run(compose_config(*SINE, "train.max_time=0.5s"), out)
    with pytest.raises(OutputDirError, match="different algo.inner_lr"):
        run(compose_config(*SINE, "train.max_time=2s", "algo.inner_lr=0.1"), out)

    second = run(compose_config(*SINE, "train.max_time=1s"), out).summary
    assert second["resumed_from_step"] == first["steps"] and second["steps"] > first["steps"]
    assert second["train_seconds_total"] >= 1.0
    tests = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"test"' in line]
    assert len(tests) == 1  # the first test point went with the steps it re-did


def test_the_paper_is_beside_the_result_in_the_summary_and_the_report(tmp_path: Path) -> None:
    common = [*SINE, "train.iterations=3", "train.eval_every=3", PAPER]
    summary = run(compose_config(*common), tmp_path / "same").summary
    paper = summary["paper"]
    assert (paper["value"], paper["ci95"], paper["source"]) == (0.5, 0.02, "Finn et al. 2017")
    assert paper["difference"] == pytest.approx(summary["test"]["mse"] - 0.5)

    other = run(compose_config(*common, "task.shots=5", "eval.shots=5"), tmp_path / "other")
    assert other.summary["paper"]["difference"] is None
    assert "10-shot; this run was tested 1-way 5-shot" in \
        other.summary["paper"]["not_comparable"]

    header, body = run_table(build_report(find_runs([tmp_path])))
    assert header[header.index("paper") + 1] == "Δ paper"
    rows = {cells[0]: dict(zip(header, cells, strict=True)) for cells in body}
    assert rows["same"]["paper"] == "0.5000"
    assert rows["same"]["Δ paper"] == f"{summary['test']['mse'] - 0.5:+.4f}"
    assert rows["other"]["Δ paper"] == "-"


@pytest.mark.parametrize(("paper", "message"), [
    ("paper={metric:acc,value:98.8,source:x,ways:5,shots:1}", r"fraction \(98.8% is 0.988\)"),
    ("paper={metric:acc,value:0.9,ways:5,shots:1}", "needs a value and a source"),
    ("paper={metric:top5,value:0.9,source:x,ways:5,shots:1}", "paper.metric must be one of"),
    ("paper={metric:acc,value:0.9,source:x,ways:5}", "paper.shots must be a positive"),
    ("paper={metric:acc,value:0.9,source:x,ways:5,shots:1,year:2017}", "paper.year is not"),
])
def test_a_bad_paper_entry_is_refused_before_training(tmp_path: Path, paper: str,
                                                      message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(compose_config(*SINE, "train.iterations=3", paper), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
