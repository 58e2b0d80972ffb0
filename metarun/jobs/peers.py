"""How the processes of a data-parallel training run agree on what happens (rank 0 leads).

Rank 0 does everything a one-process run does: it checks and claims the run directory, writes
every file and meta-tests. The other ranks only train their shares of the meta-batches
(:mod:`metarun.engine.distributed`). Three moments keep them in step, each one message from
rank 0 (or one agreement), so no rank waits for a message that will never come:

1. the start: the run directory and the checkpoint to resume, or why the run is refused (the
   others then fail with the same line instead of waiting);
2. the build: every rank builds its objects; one that fails makes all fail before training
   (a rank that fails as rank 0 did leaves the error line to rank 0);
3. the end: the summary once rank 0 has written it (the others exit only then, so a launcher
   never stops rank 0 in the middle of writing), or the error of a stop all ranks agreed on
   (a signal, a non-finite loss), or of rank 0's meta-test.

A failure that only one rank meets in the middle of training (a crash, a lost peer) is not
agreed: that rank exits, the launcher stops the others, and a peer waiting in a collective
gets an error from the backend (or, at worst, after :data:`~metarun.engine.distributed.TIMEOUT`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from omegaconf import DictConfig

from metarun import build
from metarun.engine.distributed import Dist
from metarun.errors import (
    NonFiniteLossError,
    PeerError,
    Preempted,
    Pruned,
    error_text,
    exit_status,
)
from metarun.world import env_world_size, local_rank

_R = TypeVar("_R")

#: Errors every rank raises at the same step (agreed through the step's collectives).
AGREED = (Preempted, NonFiniteLossError, Pruned)


def join(cfg: DictConfig) -> Dist:
    """This process's place in the run: one process, or a rank of the group the launcher's
    environment describes (each rank on its own GPU, ``LOCAL_RANK``, when on CUDA)."""
    if env_world_size() == 1:
        return Dist()
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    return Dist.from_env(build.device(cfg))


@dataclass(frozen=True)
class _Message:
    """What rank 0 tells the others: a start (``out``, ``resume``), an end (``summary``) or
    why not (``error``, with its exit status)."""

    out: str | None = None
    resume: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    status: int | None = None


def _refusal(error: BaseException) -> _Message:
    return _Message(error=error_text(error), status=exit_status(error))


class Peers:
    """One rank's side of the three moments; with one process every call is local."""

    def __init__(self, dist: Dist) -> None:
        self.dist, self.phase = dist, "before"

    def start(self, out: Path | None = None, resume: dict[str, Any] | None = None,
              ) -> tuple[Path, dict[str, Any] | None]:
        """Rank 0: announce the run directory and resume point. Others: receive them."""
        message = self.dist.from_main(lambda: _Message(out=str(out), resume=resume))
        self.phase = "started"
        self._raise_if_refused(message)
        return Path(message.out or "."), message.resume

    def build(self, make: Callable[[], _R]) -> _R:
        """``make()`` on every rank; if it fails on any, it fails on all. A rank that fails
        as rank 0 did (missing data, a bad setting) leaves the saying to rank 0."""
        failed: BaseException | None = None
        try:
            made = make()
        except BaseException as e:  # noqa: BLE001 - re-raised below, once all ranks know
            failed = e
        if self.dist.any(int(failed is not None))[0]:
            main = self.dist.from_main(lambda: None if failed is None else error_text(failed))
            if failed is None:
                raise PeerError("another process of this run could not build it (its log "
                                "says why)")
            if not self.dist.is_main and error_text(failed) == main:
                raise PeerError(f"rank 0 stopped the run: {main}", exit_status(failed),
                                said=True) from failed
            raise failed
        self.phase = "built"
        return made

    def trained(self) -> None:
        """Rank 0: training is over; the others wait for the end from here on."""
        self.phase = "trained"

    def end(self, summary: dict[str, Any] | None = None) -> dict[str, Any]:
        """Rank 0: hand the written summary over. Others: wait for it."""
        message = self.dist.from_main(lambda: _Message(summary=summary))
        self.phase = "ended"
        self._raise_if_refused(message)
        return message.summary or {}

    def abort(self, error: BaseException) -> None:
        """Rank 0, failing: tell the others, where they wait for a word from it."""
        if not self.dist.is_main or self.dist.world == 1:
            return
        waiting = self.phase in ("before", "trained") or (
            self.phase == "built" and isinstance(error, AGREED))  # the others stop there too
        if waiting:
            self.dist.from_main(lambda: _refusal(error))

    def _raise_if_refused(self, message: _Message) -> None:
        if message.error is not None and not self.dist.is_main:
            raise PeerError(f"rank 0 stopped the run: {message.error}", message.status,
                            said=True)


def quiet_follower() -> None:
    """A rank other than 0 logs warnings and errors only: the console shows rank 0's lines."""
    logging.getLogger("metarun").setLevel(logging.WARNING)
