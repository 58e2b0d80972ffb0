"""Graceful preemption: the first SIGTERM or SIGINT asks the trainer to stop at the next step
boundary (after checkpointing); a second one stops the process at once."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType, TracebackType

log = logging.getLogger("metarun")

#: Exit status of a second signal: 128 + the signal number, as a shell reports it.
HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Installs the handlers for the duration of a ``with`` block (main thread only; elsewhere
    it does nothing and :attr:`signal` stays ``None``)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:  # the second signal: no more waiting
            os._exit(128 + signum)
        self.signal = signum
        log.warning("%s received: checkpointing at the end of this step, then stopping "
                    "(send it again to stop at once, without a checkpoint)",
                    signal.Signals(signum).name)

    @property
    def requested(self) -> bool:
        return self.signal is not None
