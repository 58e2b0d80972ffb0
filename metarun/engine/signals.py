"""Graceful preemption: the first SIGTERM or SIGINT asks the trainer to stop at the next step
boundary (after checkpointing); a second one stops the process at once. Before training starts
(while the data is read or decoded) there is nothing to checkpoint, so the first signal stops
the run at once, with the same status and a summary.

A scheduler's own preemption signal is handled the same way: SIGUSR1 or SIGUSR2, when a
handler is already installed for it (submitit installs one that pickles the job and requeues
it). metarun stops at the step boundary, checkpoints, and the :class:`Preempted` it raises
carries that handler (``handover``), which the command calls once the summary is written: the
scheduler then requeues the job, and the requeued job resumes from the checkpoint."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

from metarun.errors import Preempted

log = logging.getLogger("metarun")

#: Exit status of a second signal: 128 + the signal number, as a shell reports it.
HANDLED = (signal.SIGTERM, signal.SIGINT)
#: Signals that schedulers send before preempting or timing out a job (handled only when
#: something, the scheduler's library, already handles them).
SCHEDULER = tuple(getattr(signal, name) for name in ("SIGUSR1", "SIGUSR2")
                  if hasattr(signal, name))


def scheduler_handler(sig: int) -> Callable[[int, FrameType | None], object] | None:
    """The handler a scheduler's library installed for ``sig`` (under metarun's own, if a
    :class:`StopRequest` is active), or ``None``."""
    handler = signal.getsignal(sig)
    while isinstance(getattr(handler, "__self__", None), StopRequest):
        handler = handler.__self__._previous.get(sig)  # type: ignore[union-attr]
    return handler if callable(handler) else None


class StopRequest:
    """Installs the handlers for the duration of a ``with`` block (main thread only; elsewhere
    it does nothing and :attr:`signal` stays ``None``).

    Args:
        at_once: the first signal raises :class:`Preempted` where the program is (for work
            that has nothing to checkpoint); otherwise it only sets :attr:`signal`.
    """

    def __init__(self, at_once: bool = False) -> None:
        self.signal: int | None = None
        self.at_once = at_once
        #: an error left a block inside this one: while the run records that failure, a
        #: signal (the launcher's, stopping a data-parallel run whose other process died) is
        #: noted, not raised, so that it does not take the error's place
        self.failing = False
        #: a block inside this one (training) ended as it should: a stop now comes after it
        self.inner_done = False
        self._previous: dict[int, object] = {}
        self.handover: Callable[[int, FrameType | None], object] | None = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (*HANDLED, *(s for s in SCHEDULER if scheduler_handler(s))):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
            owner = getattr(handler, "__self__", None)
            if isinstance(owner, StopRequest):
                owner.inner_done = exc is None
                owner.failing = exc is not None and not isinstance(exc, Preempted)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:  # the second signal: no more waiting
            os._exit(128 + signum)
        self.signal = signum
        if signum in SCHEDULER:
            self.handover = scheduler_handler(signum)
        if self.failing:
            log.warning("%s received while the run stops after an error",
                        signal.Signals(signum).name)
            return
        if self.at_once:
            log.warning("%s received: stopping", signal.Signals(signum).name)
            raise Preempted(0, None, signum, self.handover, after_training=self.inner_done)
        log.warning("%s received: checkpointing at the end of this step, then stopping "
                    "(send it again to stop at once, without a checkpoint)",
                    signal.Signals(signum).name)
