"""Learning-curve and comparison plots, and the report's table logic, on small inputs."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from metarun.jobs.train import run
from metarun.report import plots
from metarun.report.plots import Series, plot_comparison, plot_learning_curve, read_metrics
from metarun.report.runs import RunRecord, find_runs
from metarun.report.table import build_report, format_score, swept_keys
from tests.helpers import assert_png, compose_config


def write_metrics(path: Path, records: list[dict[str, object]], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_a_learning_curve_is_drawn_from_metrics_jsonl(tmp_path: Path) -> None:
    write_metrics(tmp_path / "metrics.jsonl", [
        {"step": 1, "split": "train", "loss": 1.6, "acc": 0.3, "lr": 1e-3, "seconds": 0.1},
        {"step": 2, "split": "train", "loss": 1.2, "acc": 0.5, "lr": 1e-3, "seconds": 0.2},
        {"step": 2, "split": "val", "loss": 1.3, "acc": 0.45, "ci95": 0.05, "seconds": 0.3},
        {"step": 2, "split": "test", "loss": 1.3, "acc": 0.47, "ci95": 0.02, "seconds": 0.4},
    ], tail='{"step": 3, "split": "tr')  # a line cut short by a crash
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 4
    assert plot_learning_curve(tmp_path) == tmp_path / "learning_curve.png"
    assert_png(tmp_path / "learning_curve.png")


def test_nothing_to_plot_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        plot_learning_curve(tmp_path)
    write_metrics(tmp_path / "metrics.jsonl", [])
    with pytest.raises(ValueError, match="no training or validation points"):
        plot_learning_curve(tmp_path)


@pytest.mark.parametrize("xs", [[1, 5], ["maml", "protonet"]])
def test_comparison_plots_numeric_and_categorical_axes(tmp_path: Path, xs: list[object]) -> None:
    series = [Series("a", [(xs[0], 0.9, 0.01), (xs[1], 0.95, math.nan)]),
              Series("b", [(xs[0], 0.8, 0.02)])]
    assert_png(plot_comparison(series, "x", "acc", tmp_path / "c.png", percent=True))


SINE = ["device=cpu", "data=sinusoid", "algo=maml", "train.iterations=4", "train.eval_every=2",
        "train.log_every=2", "eval.val_episodes=4", "eval.test_episodes=4"]


def test_a_run_draws_its_curve_when_it_ends(tmp_path: Path) -> None:
    run(compose_config(*SINE, "train.plot=true"), tmp_path)
    assert_png(tmp_path / "learning_curve.png")


def test_a_plot_that_fails_does_not_fail_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    def broken(run_dir: Path) -> Path:
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "plot_learning_curve", broken)
    with caplog.at_level(logging.WARNING, logger="metarun"):
        result = run(compose_config(*SINE, "train.plot=true"), tmp_path)
    assert result.summary["status"] == "completed"
    assert "could not draw" in caplog.text and "no fonts" in caplog.text


def record(name: str, status: str = "completed", **overrides: str) -> RunRecord:
    summary = {"status": status, "metric": "acc",
               "test": {"acc": 0.5 + 0.1 * len(name), "ci95": 0.01}}
    return RunRecord(Path(name), status, dict(overrides), summary if status == "completed"
                     else {"status": status, "error": "boom"})


def test_only_keys_that_differ_and_say_what_ran_are_columns() -> None:
    runs = [record("a", algo="maml", seed="0", **{"data.root": "/x", "hydra.run.dir": "a"}),
            record("b", algo="maml", seed="1", **{"data.root": "/y", "hydra.run.dir": "b"}),
            record("cc", algo="protonet", seed="0", **{"task.shots": "5"})]
    assert swept_keys(runs) == ["algo", "seed", "task.shots"]
    report = build_report(runs, by=["algo"])
    assert [len(g.rows) for g in report.groups] == [2, 1]
    assert report.groups[0].mean == pytest.approx(0.6)
    assert report.rows[0].keys["seed"] == 0  # numbers parsed, so 5 sorts after 1


def test_a_group_counts_only_completed_runs() -> None:
    runs = [record("a", algo="maml", seed="0"), record("b", "failed", algo="maml", seed="1")]
    group = build_report(runs).groups[0]
    assert len(group.rows) == 2 and len(group.completed) == 1
    assert math.isnan(group.spread)


def test_training_runs_and_evaluations_are_rows_and_other_folders_are_not(
        tmp_path: Path) -> None:
    for name, summary, config in (
            ("run", {"status": "completed"}, "seed: 0\n"),
            ("eval", {"command": "metarun-eval", "status": "completed"}, "checkpoint: x\n"),
            ("eval_killed", {}, "checkpoint: x\n"),
            ("ensemble", {"command": "metarun-eval", "status": "completed",
                          "method": "average"}, None),
            ("notes", {"accuracy": 0.5}, None),  # another tool's summary
            ("empty", {}, None)):
        (tmp_path / name).mkdir()
        if summary:
            (tmp_path / name / "summary.json").write_text(json.dumps(summary))
        if config:
            (tmp_path / name / ".hydra").mkdir()
            (tmp_path / name / ".hydra" / "config.yaml").write_text(config)
    runs = find_runs([tmp_path])
    assert {r.path.name: r.status for r in runs} == {
        "run": "completed", "eval": "completed", "eval_killed": "unfinished",
        "ensemble": "completed"}
    assert [r.path.name for r in runs if r.trained] == ["run"]


def test_a_run_whose_lock_is_held_is_running(tmp_path: Path) -> None:
    from metarun.engine.lock import RunLock

    (tmp_path / "job" / ".hydra").mkdir(parents=True)
    (tmp_path / "job" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    with RunLock(tmp_path / "job"):
        assert [r.status for r in find_runs([tmp_path])] == ["running"]
    assert [r.status for r in find_runs([tmp_path])] == ["unfinished"]


def test_scores_format_as_people_read_them() -> None:
    assert format_score("acc", 0.98765, 0.0012) == "98.77 ± 0.12"
    assert format_score("mse", 0.5, math.nan) == "0.5000"
    assert format_score("acc", math.nan) == "-"
