"""``metarun dist.nproc=N``: start N training processes on this machine through
torch.distributed's elastic launcher (what torchrun runs), and report their run as one job.

The processes are ``python -m metarun`` with the job's own overrides and its run directory,
chosen here once (``hydra.run.dir``), so every rank is in the same run. Rendezvous is local
(c10d on a free port, as ``torchrun --standalone``); no restarts: a rank that fails fails the
run, and the launcher stops the others. Rank 0's ``summary.json`` is the job's result.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from metarun.errors import EXIT_ERROR, EXIT_PREEMPTED, PeerError, Pruned, error_text
from metarun.extras import JOB_RANK_ENV
from metarun.summary import COMPLETED, PREEMPTED, PRUNED, RunResult, read_summary

#: Seconds the launcher gives the processes to stop on SIGTERM (a step boundary, one
#: checkpoint) before it kills them.
SHUTDOWN_SECONDS = 120


@contextmanager
def _ranks_environment(nproc: int, env: dict[str, str]) -> Iterator[None]:
    """The processes' environment: ``env``; the mark of one job's ranks (``JOB_RANK_ENV``);
    and the CPU's cores shared between them (as torchrun does, unless the user chose): N
    processes with all cores each slow each other down many times over."""
    values = {**env, JOB_RANK_ENV: "1"}
    if "OMP_NUM_THREADS" not in os.environ:
        values["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    os.environ.update(values)
    try:
        yield
    finally:
        for key in values:
            os.environ.pop(key, None)


@contextmanager
def _agent_quiet() -> Iterator[None]:
    """torch's elastic agent logs each process it stops or sees fail, in its own format; the
    command's last line says the same, rank by rank (:func:`_failed_ranks`), so it is not
    shown twice. Its loggers each have a level of their own (``LOGLEVEL``)."""
    agents = [logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict)
              if name.startswith("torch.distributed.elastic")]
    levels = [agent.level for agent in agents]
    for agent in agents:
        agent.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for agent, level in zip(agents, levels, strict=True):
            agent.setLevel(level)


def launch(nproc: int, overrides: list[str], run_dir: Path,
           env: dict[str, str] | None = None) -> RunResult:
    """Run the job of ``overrides`` in ``nproc`` processes, in ``run_dir``; its summary.
    ``env``: environment variables for the processes (a search's trial, for rank 0).

    Raises:
        Pruned: the run was a search's trial, and its pruner stopped it.
        PeerError: the run did not complete; its status is rank 0's (75 when it was stopped
            by a signal, so a sweep stops as for a one-process run).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                          run_id=f"metarun-{uuid.uuid4().hex[:8]}", rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0,
                          shutdown_timeout=SHUTDOWN_SECONDS)
    args = ["-m", "metarun", *[o for o in overrides if not o.startswith("hydra.run.dir=")],
            f"hydra.run.dir={run_dir}"]
    started = time.time()
    try:
        with _ranks_environment(nproc, env or {}), _agent_quiet():
            elastic_launch(config, sys.executable)(*args)
    except (ChildFailedError, SignalException) as e:
        _record_if_killed(run_dir, started, e)
        summary = read_summary(run_dir) or {}
        status = EXIT_PREEMPTED if summary.get("status") == PREEMPTED else _status(e)
        why = summary.get("error") or error_text(e).splitlines()[0]
        ranks = _failed_ranks(e)
        raise PeerError(f"the {nproc} training processes stopped"
                        f"{f' ({ranks})' if ranks else ''}: {why}",
                        status) from None
    summary = read_summary(run_dir) or {}
    if summary.get("status") == PRUNED:  # a search's trial: its rank 0 reported, all stopped
        raise Pruned(str(summary.get("error", "")).removeprefix(f"{Pruned.__name__}: "))
    if summary.get("status") != COMPLETED:
        raise PeerError(f"the {nproc} training processes ended without a completed run in "
                        f"{run_dir}")
    return RunResult(summary=summary, output_dir=str(run_dir))


def _record_if_killed(run_dir: Path, started: float, error: Exception) -> None:
    """When rank 0 had claimed the directory in this launch (its ``.hydra/`` is new) but was
    stopped before it could say how the run ended (the launcher kills what has not stopped
    30 s after another rank failed), the summary says so here: nothing claims success, and a
    checkpoint is resumable."""
    from metarun.jobs.train import write_unfinished

    def fresh(path: Path) -> bool:
        return path.exists() and path.stat().st_mtime >= started - 1  # coarse clocks

    if fresh(run_dir / ".hydra" / "config.yaml") and not fresh(run_dir / "summary.json"):
        write_unfinished(run_dir, PeerError(f"a training process was stopped: "
                                            f"{_describe(error)}"), time.time() - started)


def _describe(error: Exception) -> str:
    """How each failed rank ended (``rank 1: killed by SIGKILL``), or the error's first line."""
    return _failed_ranks(error) or error_text(error).splitlines()[0]


def _failed_ranks(error: Exception) -> str:
    """How each failed rank ended (``rank 1: killed by SIGKILL``); empty when none is known."""
    import signal

    return ", ".join(f"rank {rank}: " + (f"killed by {signal.Signals(-f.exitcode).name}"
                                         if f.exitcode < 0 else f"exit status {f.exitcode}")
                     for rank, f in sorted((getattr(error, "failures", None) or {}).items()))


def _status(error: Exception) -> int:
    """Rank 0's exit status, else the first failed rank's."""
    failures = getattr(error, "failures", None) or {}
    first = failures.get(0) or next(iter(failures.values()), None)
    code = getattr(first, "exitcode", None)
    return code if isinstance(code, int) and code > 0 else EXIT_ERROR
