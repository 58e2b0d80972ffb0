"""A long meta-test says how far it has got: a log line every EVAL_LOG_SECONDS when no one
watches a terminal, a transient bar when someone does, and nothing for a short one."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from metarun.engine import progress
from metarun.engine.evaluate import evaluate
from metarun.tasktypes import CLASSIFICATION, REGRESSION
from tests.unit.test_divergence import _Fixed


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
