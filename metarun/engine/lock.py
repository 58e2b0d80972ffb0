"""One process per run directory: an exclusive, non-blocking lock on ``<run dir>/.lock``.

The operating system releases the lock when the process ends, however it ends, so a killed
run never leaves a stale lock behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from metarun.errors import RunLockedError


class RunLock:
    """Hold ``<directory>/.lock`` for the duration of a ``with`` block.

    Raises:
        RunLockedError: another process holds it.
    """

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunLockedError(f"another metarun process is using {self.path.parent}; "
                                 "wait for it to finish or choose another run directory") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def is_locked(directory: str | Path) -> bool:
    """Whether a live process holds ``directory``'s lock; only reads (creates nothing)."""
    lock = Path(directory) / ".lock"
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:  # no lock file: nobody has ever worked here
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


@contextmanager
def taking_turns(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` for a ``with`` block, waiting for it: the
    processes of a parallel sweep that share one resource (a tracker's SQLite store) use it
    one at a time. Released when the block ends or the process dies."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
