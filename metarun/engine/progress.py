"""Progress reporting at the edge: a rich bar on a terminal, plain log lines anywhere else.

CI logs and files stay readable (one line every ``log_every`` steps); a person at a terminal
gets a live bar, with log records rendered above it instead of through it.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from typing import Any

from metarun.tasktypes import CLASSIFICATION, TaskType

log = logging.getLogger("metarun")

#: Seconds between a meta-test's progress lines when no one is watching a terminal.
EVAL_LOG_SECONDS = 30.0


def interactive() -> bool:
    """Whether a person is watching: stdout (where the logs go) is a terminal."""
    return sys.stdout.isatty()


@contextmanager
def _logs_through(console: Any) -> Iterator[None]:
    """Route terminal log handlers through ``console`` so records print above a live bar."""
    from rich.logging import RichHandler

    root = logging.getLogger()
    swapped = [h for h in root.handlers
               if type(h) is logging.StreamHandler and getattr(h.stream, "isatty", lambda: False)()]
    rich_handler = RichHandler(console=console, show_path=False, markup=False)
    rich_handler.setLevel(min((h.level for h in swapped), default=logging.NOTSET))
    for h in swapped:
        root.removeHandler(h)
    if swapped:
        root.addHandler(rich_handler)
    try:
        yield
    finally:
        if swapped:
            root.removeHandler(rich_handler)
            for h in swapped:
                root.addHandler(h)


def _live_bar(stack: ExitStack, *columns: Any, transient: bool) -> Any:
    """A rich progress bar with ``columns`` on stdout, log records printed above it, until
    ``stack`` closes."""
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(*columns, console=Console(file=sys.stdout), transient=transient)
    stack.enter_context(_logs_through(bar.console))
    stack.enter_context(bar)
    return bar


class TrainProgress:
    """Meta-training progress from ``start`` to ``total`` steps.

    Args:
        total: the last step.
        start: the step training starts after (0 for a fresh run).
        log_every: in non-interactive mode, log a line every this many steps.
        live: draw a rich progress bar (default: when stdout is a terminal).
        task_type: whose metric is shown next to the loss, and how it is written.
        time_left: seconds of the time budget left (``None``: none); the logged eta is the
            sooner of the steps' end and the budget's.
        on_speed: called once, ``log_every`` steps in, with that step and the speed then
            (:meth:`steady_speed`).
    """

    def __init__(self, total: int, start: int = 0, log_every: int = 50,
                 live: bool | None = None, task_type: TaskType = CLASSIFICATION,
                 time_left: float | None = None,
                 on_speed: Callable[[int, float], None] | None = None) -> None:
        self.total, self.start, self.log_every = total, start, max(1, log_every)
        self.time_left, self.on_speed = time_left, on_speed
        self.task_type = task_type
        self.metric, self.percent = task_type.metric, task_type.percent
        self.live = interactive() if live is None else live
        self._t0 = time.perf_counter()
        self._first: tuple[int, float] | None = None  # the first step's end (see steady_speed)
        self._progress: Any = None
        self._task: Any = None
        self._stack = ExitStack()

    def __enter__(self) -> TrainProgress:
        self._t0 = time.perf_counter()
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = _live_bar(
                self._stack, TextColumn("[bold]{task.description}"), BarColumn(),
                MofNCompleteColumn(), TextColumn("{task.fields[text]}"), TimeElapsedColumn(),
                TextColumn("eta"), TimeRemainingColumn(), transient=False,
            )
            self._task = self._progress.add_task("meta-train", total=self.total,
                                                 completed=self.start, text="")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def evaluation(self, label: str, total: int) -> EvalProgress:
        """Progress of an evaluation between steps (``"validation"`` of ``total`` episodes):
        on a terminal a second row of this bar while it runs (rich draws one live display at
        a time); elsewhere log lines, as a meta-test's."""
        return EvalProgress(label, total, self.task_type, bar=self._progress)

    def speed(self, step: int) -> float:
        """Steps per second since this progress started."""
        return (step - self.start) / max(time.perf_counter() - self._t0, 1e-9)

    def steady_speed(self, step: int) -> float:
        """Steps per second since the first step ended: without its one-off costs (first
        allocations, lazy initialisation), which made a 1,200-step estimate 5% short."""
        if self._first is None or step <= self._first[0]:
            return self.speed(step)
        return (step - self._first[0]) / max(time.perf_counter() - self._first[1], 1e-9)

    def update(self, step: int, loss: float, value: float) -> None:
        """Report that ``step`` finished with training ``loss`` and metric ``value``
        (running means)."""
        if self._first is None:
            self._first = (step, time.perf_counter())
        if self.on_speed is not None and step - self.start == self.log_every:
            self.on_speed(step, self.steady_speed(step))
        speed = self.speed(step)
        if self._progress is not None:
            shown = f"{value:6.1%}" if self.percent else f"{value:.4f}"
            self._progress.update(self._task, completed=step,
                                  text=f"loss {loss:.3f}  {self.metric} {shown}  "
                                       f"{speed:.2f} it/s")
        elif step % self.log_every == 0 or step == self.total:
            left = (self.total - step) / max(speed, 1e-9)
            if self.time_left is not None:
                left = min(left, max(self.time_left - (time.perf_counter() - self._t0), 0.0))
            eta = timedelta(seconds=round(left))
            log.info("step %d/%d  loss %.4f  %s %s  %.2f it/s  eta %s", step, self.total, loss,
                     self.metric, self.task_type.format(value), speed, eta)


class EvalProgress:
    """Progress over the ``total`` episodes of a meta-test, for one long enough to need it: on
    a terminal a bar that goes when the test ends; elsewhere a log line every ``every``
    seconds, so a test shorter than that prints nothing more than its result.

    Args:
        label: what is running (``"meta-test"``); ``None``: report nothing.
        total: its episodes (0: unknown, and nothing is reported).
        task_type: whose metric is shown, and how it is written.
        every: seconds between log lines (non-interactive; default
            :data:`EVAL_LOG_SECONDS`).
        live: draw a rich bar (default: when stdout is a terminal).
        bar: a live rich progress (the training bar, :meth:`TrainProgress.evaluation`) to
            show this one as a row of, until it ends, in place of a bar of its own or log
            lines.
    """

    def __init__(self, label: str | None, total: int, task_type: TaskType = CLASSIFICATION,
                 every: float | None = None, live: bool | None = None,
                 bar: Any = None) -> None:
        self.label, self.total, self.task_type = label, total, task_type
        on = bool(label and total)
        self.bar = bar if on else None
        self.every = (EVAL_LOG_SECONDS if every is None else every) if on and bar is None \
            else math.inf
        self.live = on and bar is None and (interactive() if live is None else live)
        self._t0 = self._last = time.perf_counter()
        self._done, self._sum = 0, 0.0
        self._progress: Any = None
        self._stack = ExitStack()

    def __enter__(self) -> EvalProgress:
        self._t0 = self._last = time.perf_counter()
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

            self._progress = _live_bar(
                self._stack, TextColumn("[bold]{task.description}"), BarColumn(),
                MofNCompleteColumn(), TextColumn("{task.fields[text]}"), TextColumn("eta"),
                TimeRemainingColumn(), transient=True,
            )
        elif self.bar is not None:  # a row of the training bar, removed when this ends
            self._progress = self.bar
        if self._progress is not None:
            self._task = self._progress.add_task(str(self.label), total=self.total, text="")
            if self.bar is not None:
                self._stack.callback(self.bar.remove_task, self._task)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def update(self, score: float) -> None:
        """One more episode scored, with this metric."""
        self._done += 1
        self._sum += score
        done = self._done
        if self._progress is not None:
            self._progress.update(self._task, completed=done, text=self._so_far())
            return
        now = time.perf_counter()
        if now - self._last < self.every or done >= self.total:
            return
        self._last = now
        eta = timedelta(seconds=round((self.total - done) * (now - self._t0) / done))
        log.info("%s: %d/%d episodes  %s  eta %s", self.label, done, self.total,
                 self._so_far(), eta)

    def _so_far(self) -> str:
        mean = self._sum / max(self._done, 1)
        return f"{self.task_type.metric} {self.task_type.format(mean)} so far"
