"""The meta learning-rate schedules of ``train.lr_schedule``: a table of functions.

Each entry builds a torch scheduler (or ``None`` for a constant rate) that the trainer steps
once per meta-update. A new schedule is one function and one entry here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer, lr_scheduler

Scheduler = lr_scheduler.LRScheduler


@dataclass(frozen=True)
class ScheduleSettings:
    """``train.*`` keys that shape a schedule.

    Attributes:
        iterations: the run's number of meta-updates (cosine and linear end there).
        min_lr: the final learning rate of the cosine and linear schedules.
        step_every: period of the step schedule.
        gamma: factor of the step schedule.
    """

    iterations: int
    min_lr: float = 0.0
    step_every: int = 2000
    gamma: float = 0.5


def _constant(optimizer: Optimizer, s: ScheduleSettings) -> Scheduler | None:
    return None


def _cosine(optimizer: Optimizer, s: ScheduleSettings) -> Scheduler:
    """From each initial rate to ``min_lr`` over ``iterations`` steps (MAML++)."""
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=s.iterations, eta_min=s.min_lr)


def _linear(optimizer: Optimizer, s: ScheduleSettings) -> Scheduler:
    """The same, linearly (Reptile's annealed outer step size); per parameter group, from its
    initial rate at step 0 to ``min_lr`` after the last step."""
    def factor(base: float) -> Callable[[int], float]:
        if base <= 0:
            return lambda t: 1.0
        return lambda t: 1.0 - (1.0 - s.min_lr / base) * min(t, s.iterations) / s.iterations

    return lr_scheduler.LambdaLR(optimizer, [factor(g["lr"]) for g in optimizer.param_groups])


def _step(optimizer: Optimizer, s: ScheduleSettings) -> Scheduler:
    """Multiplied by ``gamma`` every ``step_every`` steps (ProtoNet's halving every 2000
    episodes)."""
    return lr_scheduler.StepLR(optimizer, step_size=s.step_every, gamma=s.gamma)


SCHEDULES: dict[str, Callable[[Optimizer, ScheduleSettings], Scheduler | None]] = {
    "constant": _constant,
    "cosine": _cosine,
    "linear": _linear,
    "step": _step,
}

#: The schedules whose shape depends on the run's length (``train.iterations``).
LENGTH_SCHEDULES = ("cosine", "linear")


def make_schedule(optimizer: Optimizer, name: str,
                  settings: ScheduleSettings) -> Scheduler | None:
    """The scheduler ``name`` (a key of :data:`SCHEDULES`) over ``optimizer``.

    Raises:
        ValueError: an unknown name, or settings out of range.
    """
    if name not in SCHEDULES:
        raise ValueError(f"train.lr_schedule must be one of {', '.join(SCHEDULES)}; got "
                         f"{name!r}")
    if settings.min_lr < 0:
        raise ValueError(f"train.min_lr must be non-negative; got {settings.min_lr}")
    if settings.step_every < 1 or not 0 < settings.gamma <= 1:
        raise ValueError("train.lr_step_every must be at least 1 and train.lr_gamma in "
                         f"(0, 1]; got {settings.step_every}, {settings.gamma}")
    scheduler = SCHEDULES[name](optimizer, settings)
    if scheduler is not None and name in LENGTH_SCHEDULES:
        # Saved with the state (LRScheduler.state_dict keeps every attribute), so that a
        # resumed run knows the length its rate was laid over (see restore).
        scheduler.iterations = settings.iterations  # type: ignore[attr-defined]
    return scheduler


def restore(scheduler: Scheduler, state: dict[str, Any]) -> int | None:
    """Load a checkpoint's schedule ``state`` into ``scheduler``, which was built from the
    resumed run's settings.

    A run continued with another ``train.iterations`` keeps its step count, but a cosine or
    linear rate is laid over the new length from there on: the next step takes the rate that
    a run of the new length takes at that step (torch's cosine would otherwise keep the old
    length, whose cosine turns back up past its end, and the linear rate would take one more
    step at its old value). Returns the old length when it differed, else ``None``.
    """
    length = getattr(scheduler, "iterations", None)
    scheduler.load_state_dict(state)
    if length is None:
        return None
    before = state.get("iterations", state.get("T_max"))  # T_max: older cosine checkpoints
    scheduler.iterations = length  # type: ignore[attr-defined]
    if before == length:
        return None  # unchanged: the loaded state is exactly the uninterrupted run's
    if isinstance(scheduler, lr_scheduler.CosineAnnealingLR):
        scheduler.T_max = length  # its recursion then goes on from the rate set below
        t, low = min(scheduler.last_epoch, length), scheduler.eta_min
        lrs = [low + (base - low) * (1 + math.cos(math.pi * t / length)) / 2
               for base in scheduler.base_lrs]
    else:  # the linear LambdaLR: closed form in the step, as its get_lr
        lrs = [base * factor(scheduler.last_epoch) for factor, base in
               zip(scheduler.lr_lambdas, scheduler.base_lrs, strict=True)]  # type: ignore[attr-defined]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports
    return None if before is None else int(before)


def budget_shortfall(scheduler: lr_scheduler.LRScheduler | None, step: int, iterations: int,
                     speed: float, time_left: float | None) -> str | None:
    """What to say when, at ``speed`` steps per second, the ``time_left`` of a time budget
    ends the run before a schedule laid over ``iterations`` steps reaches its end: the rate
    would stop above ``train.min_lr``. ``None`` when at least 90% of the steps fit, or the
    rate does not depend on the run's length (only ``cosine`` and ``linear`` do)."""
    if getattr(scheduler, "iterations", None) is None or time_left is None:
        return None
    steps = step + int(speed * max(time_left, 0.0))
    # Only a tenth short or more: estimates here were within about 6% of the steps run (the
    # speed still changes after the first steps), and a cosine stopped a tenth early ends at
    # 2.4% of its initial rate, already annealed.
    if steps >= 0.9 * iterations:
        return None
    return (f"at {speed:.2f} it/s, train.max_time leaves time for about {steps} of "
            f"train.iterations = {iterations} steps; the learning-rate schedule is laid over "
            "all of them, so it would stop above train.min_lr (set train.iterations to "
            f"about {steps} for this budget on this machine)")
