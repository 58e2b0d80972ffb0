"""The one skeleton of every Hydra console script (``metarun``, ``metarun-eval``,
``metarun-ensemble``).

A command is a :class:`Command`: its name, its config and its job (config and output directory
in, a :class:`~metarun.summary.RunResult` and its ``summary.json`` out). :func:`main` owns
everything else, once for all of them: checking the command line before Hydra starts (renamed
keys, missing extras, unknown keys and options, bad values, unusable output directories, in
one line each: :mod:`metarun.cli.checks`), running each job through :func:`run_job` (an
expected failure is one line and its exit status from :mod:`metarun.errors`; in a sweep it is
recorded and the sweep goes on), and the sweep's closing list of jobs that did not complete.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from metarun.cli.checks import check_output_dir, check_overrides, check_renamed
from metarun.cli.parallel import machine_share
from metarun.cli.ranks import check_launcher, end_rank, follower_args
from metarun.cli.sweep import FAILED_JOBS, register_resolvers
from metarun.configs import config_dir
from metarun.errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_PREEMPTED, exit_status
from metarun.extras import check_extras
from metarun.summary import RunResult

register_resolvers()  # before Hydra composes a config


@dataclass(frozen=True)
class Command:
    """One Hydra console script.

    Attributes:
        prog: its name, at the start of its error lines.
        config_name: its primary config in ``conf/``.
        job: what each job does: ``job(cfg, output_dir)``.
        renamed: old spellings of keys that users may have in scripts -> the key now.
        rewrite: changes the command line before anything else (after ``device=cuda:N``).
        checks: more checks of the command line, each an error line or ``None``.
        show: what the console shows of a finished job, beyond its log lines.
    """

    prog: str
    config_name: str
    job: Callable[[DictConfig, str], RunResult]
    renamed: dict[str, str] = field(default_factory=dict)
    rewrite: Callable[[list[str]], list[str]] | None = None
    checks: tuple[Callable[[list[str]], str | None], ...] = ()
    show: Callable[[RunResult], None] | None = None


_DEVICE_SHORTHAND = re.compile(r"^device=((?:cuda:\d+)(?:,cuda:\d+)*)$")


def expand_device_shorthand(argv: list[str]) -> list[str]:
    """Let ``device=cuda:N`` select the ``cuda`` option of the ``device`` group on GPU N.

    ``device`` is a config group (auto, cpu, cuda, mps), so Hydra alone would look for a file
    ``device/cuda:1.yaml``; this rewrites the argument to ``device=cuda device.name=cuda:1``.
    A sweep ``device=cuda:0,cuda:1`` becomes ``device=cuda device.name=cuda:0,cuda:1``.
    """
    out = []
    for arg in argv:
        match = _DEVICE_SHORTHAND.match(arg)
        out += ["device=cuda", f"device.name={match.group(1)}"] if match else [arg]
    return out


def unwrap(raised: BaseException) -> BaseException:
    """A component that refused its arguments: its own error, not Hydra's wrapper."""
    from hydra.errors import InstantiationException

    if isinstance(raised, InstantiationException) and isinstance(raised.__cause__, Exception):
        return raised.__cause__
    return raised


def run_job(command: Command, cfg: DictConfig) -> float:
    """Run one Hydra job of ``command``; return its sweep objective.

    A single job that fails as expected prints one line and exits with its status. In a
    multirun one failed job must not stop the sweep (a stop signal does): it is logged, listed
    in :data:`~metarun.cli.sweep.FAILED_JOBS` for the end of the sweep, and, in a directory the
    job had claimed, recorded as ``failed`` in ``summary.json``; a job refused before it
    claimed its directory writes nothing there. A re-run sweep's job that already completed
    with the same config is skipped, keeping its result.
    """
    import logging

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from metarun.errors import PeerError, Preempted, Pruned, RunCompletedError, error_text
    from metarun.jobs.rundir import claimed, record_failure
    from metarun.summary import objective, read_summary

    log = logging.getLogger("metarun")
    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.output_dir
    try:
        with machine_share(cfg, hydra_cfg):
            result = command.job(cfg, output_dir)
        if command.show is not None:
            command.show(result)
        return result.objective
    except (Exception, Preempted) as raised:
        e = unwrap(raised)
        if isinstance(e, Preempted) and e.handover is not None:
            log.warning("%s; handing the job back to its scheduler", e)
            e.handover(e.signum, None)  # submitit: pickles the job, requeues it and exits
        status = exit_status(e)
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        if isinstance(e, Pruned):  # a search's trial, stopped as its pruner said: no failure
            # (in one of the processes of a data-parallel trial, a run of its own: no job number)
            log.info("%s %s", f"job {hydra_cfg.job.num}" if multirun else "this run was", e)
            return float("nan")
        if multirun and isinstance(e, RunCompletedError):
            log.info("job %s already completed; skipped", hydra_cfg.job.num)
            return objective(read_summary(e.directory) or {})
        if multirun and status != EXIT_PREEMPTED:
            log.error("job %s failed: %s", hydra_cfg.job.num, e, exc_info=status is None)
            where = getattr(e, "directory", None) or Path(output_dir)
            FAILED_JOBS.setdefault(str(Path(where).resolve()), error_text(e))
            if claimed(where):
                record_failure(Path(where), e, command.prog)
            return float("nan")
        if status is None:
            raise
        # An expected failure: one line that says what to do, not a traceback (one in all:
        # another rank of a data-parallel run does not repeat what rank 0 said).
        if not (isinstance(e, PeerError) and e.said):
            log.error("%s", e)
        sys.exit(status)


def run_app(prog: str, app: Callable[[], object], problem: str | None) -> None:
    """A Hydra app's console script: a problem found before Hydra starts is one error line and
    status 2; jobs of a sweep that did not complete are listed at the end, status 1."""
    if problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    FAILED_JOBS.clear()
    app()
    if FAILED_JOBS:
        print(f"{prog}: {len(FAILED_JOBS)} job(s) of the sweep did not complete:",
              *(f"{path}: {why}" for path, why in sorted(FAILED_JOBS.items())),
              sep="\n  ", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def main(command: Command, argv: list[str] | None = None, prog: str | None = None) -> None:
    """Run ``command`` on ``argv`` (default: the process's arguments) as its console script
    (``prog``: the name its error lines start with, if not the command's)."""
    import hydra

    from metarun.world import env_world_size

    args = expand_device_shorthand(sys.argv[1:] if argv is None else argv)
    if command.rewrite is not None:
        args = command.rewrite(args)
    args = follower_args(args)
    problem = (check_renamed(args, command.renamed) or check_extras(args) or check_launcher(args)
               or next((p for check in command.checks if (p := check(args))), None)
               or check_overrides(args, command.config_name) or check_output_dir(args))
    sys.argv = [sys.argv[0], *args]

    def task(cfg: DictConfig) -> float:
        return run_job(command, cfg)

    app = hydra.main(version_base="1.3", config_path=config_dir(),
                     config_name=command.config_name)(task)
    def run() -> None:
        run_app(prog or command.prog, app, problem)

    if env_world_size() > 1:  # one rank of a data-parallel run
        end_rank(run)
    run()
