"""The one skeleton of every Hydra console script (``metarun``, ``metarun-eval``,
``metarun-ensemble``).

A command is a :class:`Command`: its name, its config and its job (config and output directory
in, a :class:`~metarun.summary.RunResult` and its ``summary.json`` out). :func:`main` owns
everything else, once for all of them: checking the command line before Hydra starts (renamed
keys, missing extras, unknown keys and options, bad values, unusable output directories, in
one line each), running each job through :func:`run_job` (an expected failure is one line and
its exit status from :mod:`metarun.errors`; in a sweep it is recorded and the sweep goes on),
and the sweep's closing list of jobs that did not complete.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from metarun.cli.parallel import machine_share
from metarun.cli.ranks import check_launcher, follower_args
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

    from metarun.errors import Preempted, Pruned, RunCompletedError
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
            log.info("job %s %s", hydra_cfg.job.num, e)
            return float("nan")
        if multirun and isinstance(e, RunCompletedError):
            log.info("job %s already completed; skipped", hydra_cfg.job.num)
            return objective(read_summary(e.directory) or {})
        if multirun and status != EXIT_PREEMPTED:
            log.error("job %s failed: %s", hydra_cfg.job.num, e, exc_info=status is None)
            where = getattr(e, "directory", None) or Path(output_dir)
            FAILED_JOBS.setdefault(str(Path(where).resolve()), f"{type(e).__name__}: {e}")
            if claimed(where):
                record_failure(Path(where), e, command.prog)
            return float("nan")
        if status is None:
            raise
        # An expected failure: one line that says what to do, not a traceback.
        log.error("%s", e)
        sys.exit(status)


#: Hydra's flags that take a value (``--cfg job``), and those after which Hydra does
#: something of its own (help, another config) that metarun does not check beforehand.
_VALUE_FLAGS = ("--cfg", "-c", "--package", "-p")
_OWN_FLAGS = ("--help", "-h", "--hydra-help", "--version", "--shell-completion", "-sc",
              "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
              "--experimental-rerun", "--info", "-i")


def _split_argv(argv: list[str]) -> tuple[set[str], list[str]] | None:
    """Hydra's flags and the overrides of a command line; ``None`` when Hydra alone should
    handle it."""
    flags: set[str] = set()
    overrides: list[str] = []
    args = iter(argv)
    for arg in args:
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        flag = arg.split("=", 1)[0]
        if flag in _OWN_FLAGS:
            return None
        flags.add(flag)
        if flag in _VALUE_FLAGS and "=" not in arg:
            next(args, None)
    return flags, overrides


def _jobs(overrides: list[str], multirun: bool) -> tuple[list[list[str]], list[str]]:
    """The overrides of every job the command line starts (a basic sweep's product) and the
    swept keys; for an Optuna search, which draws the swept values itself, one job of the
    other overrides."""
    if not multirun:
        return [overrides], []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    swept = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    if any(o.lstrip("+").startswith(("hparams_search=", "hydra/sweeper=")) for o in overrides):
        return [[str(o.input_line) for o in parsed if not o.is_sweep_override()]], []
    return BasicSweeper.split_arguments(parsed, None)[0], swept


def _is_choice(override: str) -> bool:
    """Whether ``override`` chooses an option of a config group (or sets Hydra's own keys),
    rather than a value."""
    key = override.lstrip("+~").split("=", 1)[0].split("@", 1)[0]
    return key.startswith("hydra") or "/" in key or (Path(config_dir()) / key).is_dir()


def check_overrides(argv: list[str], config_name: str = "config") -> str | None:
    """Compose the config of every job the command line starts, the way Hydra will, and return
    one line naming the first unknown key or option, malformed override or (for ``metarun``
    runs) bad value, instead of Hydra's multi-line report or a failure inside a job."""
    split = _split_argv(argv)
    if split is None:
        return None
    flags, overrides = split
    multirun = bool(flags & {"-m", "--multirun"})
    try:
        jobs, swept = _jobs(overrides, multirun)
    except Exception as e:  # noqa: BLE001 - a malformed sweep, in one line
        return " ".join(str(e).split())
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        for i, job in enumerate(jobs):
            problem = _check_job(job, config_name, check_values=not flags & {"--cfg", "-c"})
            if problem:
                values = [o for o in job if o.split("=", 1)[0] in swept]
                return problem + (f" (sweep job {i}: {' '.join(values)})" if values else "")
    return None


def _check_job(overrides: list[str], config_name: str, check_values: bool) -> str | None:
    cfg, problem = _compose(overrides, config_name)
    if problem or not check_values or config_name != "config":
        return problem
    from metarun.validate import check_value_types, validate_config

    defaults, _ = _compose([o for o in overrides if _is_choice(o)], config_name)
    try:
        validate_config(cfg)
        if defaults is not None:
            check_value_types(cfg, defaults)
    except Exception as e:
        if exit_status(e) != EXIT_BAD_INPUT:
            raise
        return str(e)
    return None


def _compose(overrides: list[str], config_name: str) -> tuple[Any, str | None]:
    """The composed config, or an error line."""
    from hydra import compose
    from hydra.errors import ConfigCompositionException, MissingConfigException

    try:
        return compose(config_name=config_name, overrides=overrides), None
    except MissingConfigException as e:
        options = ", ".join(e.options or [])
        return None, (f"unknown option {e.missing_cfg_file!r}"
                      + (f"; choose one of: {options}" if options else ""))
    except ConfigCompositionException as e:
        cause = str(e.__cause__).splitlines()[0] if e.__cause__ else ""
        first = str(e).splitlines()
        hint = f" ({first[1].strip()})" if len(first) > 1 else ""
        return None, f"{first[0]} {cause}{hint}".strip()
    except Exception as e:  # noqa: BLE001 - any other composition error, in one line
        return None, " ".join(str(e).split())


def check_output_dir(argv: list[str]) -> str | None:
    """An error line when a run (or sweep) directory named on the command line cannot be
    created or written (Hydra would fail on it with a traceback). Creates nothing: a command
    that ends up running nothing (``--cfg job``) leaves no folder behind."""
    import os

    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in argv:
        key = arg.split("=", 1)[0]
        if key not in ("hydra.run.dir", "hydra.sweep.dir") or "$" in arg:
            continue
        try:
            value = str(parser.parse_override(arg).value())  # as Hydra reads it: "a b" -> a b
        except Exception:  # noqa: BLE001 - Hydra reports a malformed override itself
            continue
        path = Path(value).expanduser().absolute()
        if path.exists() and not path.is_dir():
            return f"{key} = {value} is a file, not a directory"
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            return f"{key} = {value} cannot be created: Not a directory ({existing})"
        if not os.access(existing, os.W_OK):
            return f"{key} = {value} is not writable"
    return None


def check_renamed(argv: list[str], renamed: dict[str, str]) -> str | None:
    """An error line for a key given in a spelling that has been renamed."""
    for arg in argv:
        key = arg.lstrip("+~").split("=", 1)[0]
        if key in renamed:
            return f"{key} is now {renamed[key]} (the same key in every metarun command)"
    return None


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
    run_app(prog or command.prog, app, problem)
