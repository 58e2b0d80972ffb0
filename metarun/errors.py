"""The errors metarun expects, and the exit status each one gives a command.

A command never decides a status by the module an error came from: every expected failure is
an instance of one of these classes (or a ``ValueError``/``OSError`` raised by a component
refusing its arguments or a file it cannot read), and :func:`exit_status` maps it. A new
dataset raises :class:`DataError`; no command needs to know it exists.

=====  ===========================================================================
  0    success (a re-run sweep's job that already completed is skipped: success)
  1    a bug (traceback shown), or some jobs of a sweep did not complete
  2    bad input: config, data, device, output directory, checkpoint, missing extra
  3    the meta-loss or its gradient became NaN or infinite (:class:`NonFiniteLossError`)
  4    another process holds the run directory's lock (:class:`RunLockedError`)
 75    stopped by SIGTERM/SIGINT after checkpointing (:class:`Preempted`; EX_TEMPFAIL)
=====  ===========================================================================

A rank of a data-parallel run stopped by another rank (:class:`PeerError`) exits with that
rank's status.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import ClassVar

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_NON_FINITE, EXIT_LOCKED, EXIT_PREEMPTED = (
    0, 1, 2, 3, 4, 75)


class MetarunError(Exception):
    """An expected failure; ``exit_status`` is what a command exits with."""

    exit_status: ClassVar[int] = EXIT_BAD_INPUT


class ConfigError(MetarunError, ValueError):
    """A config key is missing, unknown, of the wrong type or out of range."""


class DataError(MetarunError, RuntimeError):
    """A dataset is missing, damaged or not in the expected format (any dataset)."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The data is neither on disk nor downloadable; the message says where to put it."""


class CorruptDatasetError(DataError):
    """A file or folder on disk does not hold what the dataset holds."""


class DeviceUnavailableError(MetarunError, RuntimeError):
    """The requested device exists in the spec but not on this machine."""


class MissingExtraError(MetarunError, RuntimeError):
    """An optional feature was asked for whose extra is not installed."""


class OutputDirError(MetarunError, ValueError):
    """The output directory holds another job's results (refused before anything is
    written)."""


class RunCompletedError(OutputDirError):
    """The run directory already holds a completed run of this experiment (a re-run sweep
    skips it, keeping its result)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(f"{directory} already holds a completed run; choose another "
                         "hydra.run.dir")
        self.directory = directory


class RunLockedError(MetarunError, RuntimeError):
    """Another process holds the run directory's lock."""

    exit_status = EXIT_LOCKED


class NonFiniteLossError(MetarunError, RuntimeError):
    """The meta-loss or its gradient became NaN or infinite; training stopped before the
    update."""

    exit_status = EXIT_NON_FINITE


class Pruned(MetarunError, RuntimeError):
    """An Optuna search's pruner stopped this trial's run after a validation (its summary says
    ``pruned``; the search goes on)."""

    exit_status = EXIT_OK

    @classmethod
    def after(cls, step: int, what: str) -> Pruned:
        """The run's own stop, after the validation of ``step`` (``what`` it scored)."""
        return cls(f"pruned by the search after the validation of step {step} ({what})")


class Preempted(BaseException):
    """A SIGTERM or SIGINT stopped the run: in training at a step boundary, after writing
    ``checkpoint``; before training, or after it (``after_training``) during the meta-test,
    at once (``step`` 0, no checkpoint).

    Like ``KeyboardInterrupt`` it is not an ``Exception``: code that recovers from errors
    (a cache that will not read is rebuilt) must not swallow a stop.

    ``handover``: a scheduler's handler of the signal (submitit's requeue), for the command to
    call once the run's summary says how it ended."""

    exit_status: ClassVar[int] = EXIT_PREEMPTED

    def __init__(self, step: int, checkpoint: Path | None, signum: int,
                 handover: Callable[[int, FrameType | None], object] | None = None,
                 after_training: bool = False) -> None:
        name = signal.Signals(signum).name
        if checkpoint is not None:
            message = f"stopped by {name} after step {step}; resume from {checkpoint}"
        elif after_training:  # the last checkpoint is the trained model's
            message = (f"stopped by {name} after training, before the meta-test; run the same "
                       "command again to meta-test the trained model")
        else:
            message = f"stopped by {name} before training started; run the same command " \
                      "again to start"
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint
        self.signum, self.handover = signum, handover


class PeerError(RuntimeError):
    """Another process of a data-parallel run could not go on, or stopped the run; this one
    stops too, with the same exit status (1 when it is not known). ``said``: rank 0 has
    already printed this error, so this rank (another one) does not print it again."""

    def __init__(self, message: str, status: int | None = None, said: bool = False) -> None:
        super().__init__(message)
        self.status = EXIT_ERROR if status is None else status
        self.said = said


def error_text(error: BaseException) -> str:
    """``Type: message``: how a summary's ``error``, a sweep's list of failed jobs and rank 0's
    word to the other ranks name an error (the launcher reads a pruned trial's back)."""
    return f"{type(error).__name__}: {error}"


def exit_status(error: BaseException) -> int | None:
    """The exit status of an expected failure, or ``None`` for a bug (shown in full).

    A component that refuses its arguments raises ``ValueError`` and an unreadable or
    unwritable path is an ``OSError``: both are bad input.
    """
    if isinstance(error, PeerError):
        return error.status
    status = getattr(type(error), "exit_status", None)
    if isinstance(status, int):
        return status
    if isinstance(error, (ValueError, OSError)):
        return EXIT_BAD_INPUT
    return None
