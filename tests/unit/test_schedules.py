"""The meta learning-rate schedules of ``train.lr_schedule``, step by step."""

from __future__ import annotations

import math

import pytest
import torch

from metarun.engine.schedules import ScheduleSettings, make_schedule, restore


def _lrs(name: str, iterations: int = 10, lr: float = 1.0, **kwargs: float) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    options = {"min_lr": 0.0, "step_every": 4, "gamma": 0.5, **kwargs}
    sched = make_schedule(opt, name, ScheduleSettings(iterations, **options))  # type: ignore[arg-type]
    seen = []
    for _ in range(iterations):
        seen.append(opt.param_groups[0]["lr"])  # the lr the step at hand uses
        opt.step()
        if sched is not None:
            sched.step()
    seen.append(opt.param_groups[0]["lr"])
    return seen


def test_constant() -> None:
    assert _lrs("constant") == [1.0] * 11


@pytest.mark.parametrize("min_lr", [0.0, 0.1])
def test_cosine_and_linear_reach_min_lr_after_the_last_step(min_lr: float) -> None:
    cosine, linear = _lrs("cosine", min_lr=min_lr), _lrs("linear", min_lr=min_lr)
    for t, (c, li) in enumerate(zip(cosine, linear, strict=True)):
        assert c == pytest.approx(min_lr + (1 - min_lr) * (1 + math.cos(math.pi * t / 10)) / 2)
        assert li == pytest.approx(1 - (1 - min_lr) * t / 10)


def test_step_multiplies_by_gamma_every_period() -> None:
    assert _lrs("step", iterations=9) == pytest.approx([1, 1, 1, 1, .5, .5, .5, .5, .25, .25])


def _run(name: str, iterations: int, steps: int, state: dict | None = None,  # type: ignore[type-arg]
         min_lr: float = 0.0) -> tuple[list[float], dict, int | None]:  # type: ignore[type-arg]
    """The rates of ``steps`` steps of a run of ``iterations``, resumed from ``state``
    (scheduler and optimizer) when given; then its state and what restore returned."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_schedule(opt, name, ScheduleSettings(iterations, min_lr=min_lr))
    assert sched is not None
    before = None
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        before = restore(sched, state["scheduler"])
    seen = []
    for _ in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    seen.append(opt.param_groups[0]["lr"])
    return seen, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, before


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_a_resumed_schedule_of_the_same_length_is_the_uninterrupted_one(name: str) -> None:
    full, _, _ = _run(name, 10, 10, min_lr=0.1)
    first, state, _ = _run(name, 10, 4, min_lr=0.1)
    rest, _, before = _run(name, 10, 6, state, min_lr=0.1)
    assert before is None
    assert first[:-1] + rest == full  # exactly


@pytest.mark.parametrize(("name", "old_format"), [
    ("cosine", False), ("linear", False),
    ("cosine", True),  # saved before the length was: the cosine's state has its T_max
])
def test_a_run_continued_to_more_steps_follows_the_longer_schedule(name: str,
                                                                   old_format: bool) -> None:
    """Torch's cosine, loaded as it was saved, turned back up past the old length: this
    run's last step took the initial rate again, 1.0 instead of about 0.006."""
    _, state, _ = _run(name, 10, 10)  # a completed 10-step run, continued to 20 steps
    if old_format:
        state["scheduler"].pop("iterations")
    rest, _, before = _run(name, 20, 10, state)
    assert before == 10
    longer = [(1 + math.cos(math.pi * t / 20)) / 2 if name == "cosine" else 1 - t / 20
              for t in range(10, 21)]
    assert rest == pytest.approx(longer, abs=1e-12)
    assert rest[-1] == pytest.approx(0.0, abs=1e-12)
