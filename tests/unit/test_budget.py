"""Time budgets (``train.max_time``): a stop at a step boundary that validates and
checkpoints, a resume that goes on exactly, and the budget's syntax."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metarun.configs import parse_duration
from metarun.engine import trainer as trainer_module
from metarun.engine.checkpoint import load_checkpoint, load_resumable
from metarun.engine.trainer import Trainer
from metarun.types import STOPPED_ITERATIONS, STOPPED_MAX_TIME
from tests.unit.test_recovery import _trainer, _weights


@pytest.mark.parametrize(("text", "seconds"), [
    (90, 90.0), (2.5, 2.5), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1h30m", 5400.0),
    ("1d", 86400.0), ("0.5h", 1800.0), ("00:15:00", 900.0), ("01:02:00:05", 93605.0),
    (" 15 m ", 900.0), ("45", 45.0), (None, None)])
def test_durations_are_read_as_lightning_writes_them(text: object, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "15 minutes", "m", "-5m", "0s", "1:2:3:4:5", "1:x:00",
                                 0, -3, True, "inf", float("inf")])
def test_a_bad_duration_is_refused_naming_the_key(bad: object) -> None:
    with pytest.raises(ValueError, match=r"train.max_time must be a positive duration"):
        parse_duration(bad)


class _Clock:
    """A fake ``time.perf_counter`` that moves one second per meta-training step, so where a
    budget stops does not depend on this machine's speed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0.0
        monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: self.now)

    def drive(self, trainer: Trainer) -> Trainer:
        inner = trainer.algorithm.meta_train_step

        def step(batch):  # type: ignore[no-untyped-def]
            self.now += 1.0
            return inner(batch)

        trainer.algorithm.meta_train_step = step  # type: ignore[method-assign]
        return trainer


def test_a_budget_stops_at_a_step_boundary_validates_and_resumes_exactly(
        omniglot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A constant rate: length-dependent schedules follow train.iterations, not the budget."""
    clock = _Clock(monkeypatch)
    first = clock.drive(_trainer(omniglot, tmp_path / "cut", iterations=100,
                                 schedule="constant", max_time=2.5))
    result = first.fit()
    assert (result.last_step, result.stopped) == (3, STOPPED_MAX_TIME)  # 3 s >= 2.5 s
    last = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert last["step"] == 3 and last["val"] is not None  # validated at the stop
    assert (last["elapsed"], last["stopped"]) == (3.0, STOPPED_MAX_TIME)

    blob, _ = load_resumable(tmp_path / "cut" / "checkpoints")
    longer = clock.drive(_trainer(omniglot, tmp_path / "cut", iterations=100,
                                  schedule="constant", max_time=4.5, resume=blob))
    result = longer.fit()
    assert (result.last_step, result.stopped, result.elapsed) == (5, STOPPED_MAX_TIME, 5.0)

    full = clock.drive(_trainer(omniglot, tmp_path / "full", iterations=5,
                                schedule="constant"))
    assert full.fit().stopped == STOPPED_ITERATIONS
    expected = _weights(full)
    for k, v in _weights(longer).items():
        assert torch.equal(v, expected[k]), k


def test_the_step_count_still_ends_a_run_with_a_budget_left(
        omniglot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    clock = _Clock(monkeypatch)
    result = clock.drive(_trainer(omniglot, tmp_path, iterations=4, max_time=100.0)).fit()
    assert (result.last_step, result.stopped) == (4, STOPPED_ITERATIONS)


@pytest.mark.parametrize(("schedule", "iterations", "max_time", "warned"), [
    ("cosine", 10, 4.5, True),      # 1 step/s: about 4 of 10 steps fit; the cosine would not end
    ("linear", 10, 4.5, True),
    ("constant", 10, 4.5, False),   # its rate does not depend on the run's length
    ("cosine", 10, 8.5, True),      # about 8 of 10 fit
    ("cosine", 10, 9.5, False),     # about 9 of 10: within a tenth, not said
    ("cosine", 4, 100.0, False),    # the steps fit the budget
    ("cosine", 4, None, False),     # no budget
])
def test_a_budget_too_short_for_the_schedule_is_said_once_the_speed_is_known(
        omniglot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
        schedule: str, iterations: int, max_time: float | None, warned: bool) -> None:
    clock = _Clock(monkeypatch)
    caplog.set_level("WARNING", logger="metarun")
    clock.drive(_trainer(omniglot, tmp_path, iterations=iterations, schedule=schedule,
                         max_time=max_time)).fit()
    said = [r.getMessage() for r in caplog.records if "train.max_time leaves" in r.getMessage()]
    if not warned:
        assert said == []
        return
    # Checked after the first step (log_every 1): 1 done in 1 s, the rest at 1 step/s.
    steps = int(max_time or 0)
    assert said == [f"at 1.00 it/s, train.max_time leaves time for about {steps} of "
                    f"train.iterations = {iterations} steps; the learning-rate schedule is "
                    "laid over all of them, so it would stop above train.min_lr (set "
                    f"train.iterations to about {steps} for this budget on this machine)"]


def test_the_budget_check_leaves_the_first_steps_one_off_costs_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first step took 3 s (allocations, lazy initialisation), the next four 1 s each:
    the steady speed is 1 step/s, where the speed since the start is 5 / 7."""
    from metarun.engine import progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    with progress.TrainProgress(100, log_every=50, live=False) as bar:
        assert bar.steady_speed(0) == 0.0  # nothing done yet
        for step, at in [(1, 3.0), (2, 4.0), (3, 5.0), (4, 6.0), (5, 7.0)]:
            now[0] = at
            bar.update(step, 0.5, 0.5)
        assert bar.speed(5) == pytest.approx(5 / 7)
        assert bar.steady_speed(5) == pytest.approx(1.0)
