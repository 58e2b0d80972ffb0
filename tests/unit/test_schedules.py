"""The meta learning-rate schedules of ``train.lr_schedule``, step by step."""

from __future__ import annotations

import math

import pytest
import torch

from metarun.engine.schedules import ScheduleSettings, make_schedule


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
