"""A long meta-test says how far it has got: a log line every EVAL_LOG_SECONDS when no one
watches a terminal, a transient bar when someone does, and nothing for a short one. A
validation during training says so too: in the same log lines, or as a second row of the
training bar."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
import torch

from metarun.engine import progress
from metarun.engine.evaluate import evaluate, evaluate_each
from metarun.tasktypes import CLASSIFICATION, REGRESSION
from tests.unit.test_divergence import _Fixed
from tests.unit.test_recovery import _trainer


def _episodes(n: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(query_y=torch.tensor([[0.0], [1.0]])) for _ in range(n)]


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "episodes" in r.getMessage()]


def test_a_long_meta_test_logs_its_progress_and_running_mean(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "EVAL_LOG_SECONDS", 0.0)  # every episode counts as long
    algorithm = _Fixed(CLASSIFICATION, [(1.0, 1.0), (1.0, 0.5), (1.0, 0.0)])
    with caplog.at_level(logging.INFO, logger="metarun"):
        result = evaluate(algorithm, _episodes(3), progress="meta-test")
    lines = _lines(caplog)
    # one line per episode but the last (the result's own line says the rest)
    assert [line.split("  eta")[0] for line in lines] == [
        "meta-test: 1/3 episodes  acc 100.00% so far",
        "meta-test: 2/3 episodes  acc 75.00% so far",
    ]
    assert result.score == pytest.approx(0.5)


def test_a_short_or_unlabelled_meta_test_prints_nothing_more(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    with caplog.at_level(logging.INFO, logger="metarun"):
        evaluate(_Fixed(REGRESSION, [(1.0, 1.0)] * 3), _episodes(3), progress="meta-test")
        monkeypatch.setattr(progress, "EVAL_LOG_SECONDS", 0.0)
        monkeypatch.setattr(progress, "interactive", lambda: True)
        evaluate(_Fixed(REGRESSION, [(1.0, 1.0)] * 3), _episodes(3))  # validation: silent
    assert _lines(caplog) == []


def test_on_a_terminal_the_bar_goes_when_the_test_ends(
        capsys: pytest.CaptureFixture[str]) -> None:
    with progress.EvalProgress("meta-test", 2, REGRESSION, live=True) as bar:
        assert bar._progress is not None
        for score in (0.5, 0.25):
            bar.update(score)
        assert bar._progress.tasks[0].completed == 2
        assert bar._so_far() == "mse 0.3750 so far"
    assert bar._progress.live.transient  # rich erases a transient bar when it stops
    capsys.readouterr()


def test_validation_during_training_logs_its_progress(
        omniglot, tmp_path, caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "EVAL_LOG_SECONDS", 0.0)
    trainer = _trainer(omniglot, tmp_path, iterations=2, eval_every=2)
    with caplog.at_level(logging.INFO, logger="metarun"):
        trainer.fit()
    # the two validation episodes: a line for the first, the result's line for both
    lines = [line for line in _lines(caplog) if line.startswith("validation")]
    assert [line.split(" episodes")[0] for line in lines] == ["validation: 1/2"]


def test_on_a_terminal_validation_is_a_second_row_of_the_training_bar(
        capsys: pytest.CaptureFixture[str]) -> None:
    seen = []
    with progress.TrainProgress(10, live=True, task_type=REGRESSION) as train:
        train.update(1, 0.5, 0.25)
        text = train._progress.tasks[0].fields["text"]
        assert text.startswith("loss 0.500  mse 0.2500  ") and text.endswith(" it/s")
        with train.evaluation("validation", 2) as report:
            assert report._progress is train._progress  # rich allows one live display
            for score in (0.5, 0.25):
                report.update(score)
                row = train._progress.tasks[-1]
                seen.append((row.description, row.completed, row.fields["text"]))
        assert len(train._progress.tasks) == 1  # the row goes when the validation ends
    assert seen == [("validation", 1, "mse 0.5000 so far"), ("validation", 2, "mse 0.3750 so far")]
    capsys.readouterr()


def test_predictors_scored_together_get_a_result_each_and_one_divergence_bound() -> None:
    rows = iter([[(1.0, 1.0), (2.0, 0.5)], [(3.0, 0.0), (40.0, 0.25)]])
    episodes = [SimpleNamespace(query_y=torch.arange(5))] * 2  # a uniform guess: ln 5
    first, second = evaluate_each(lambda episode: next(rows), episodes, CLASSIFICATION)
    assert (first.score, first.loss, second.score, second.loss) == (0.5, 2.0, 0.375, 21.0)
    assert first.diverged_above == second.diverged_above == pytest.approx(10 * math.log(5))
    assert (first.diverged, second.diverged) == (0, 1)
    with pytest.raises(ValueError, match="zero episodes"):
        evaluate_each(lambda episode: [(1.0, 1.0)], [], CLASSIFICATION)
