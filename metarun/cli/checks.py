"""The checks of a console script's command line before Hydra starts (:func:`metarun.cli.
common.main` runs them): renamed keys, unknown keys and options, bad values (in every job of a
basic sweep, and over the space of an Optuna search), unusable output directories. Each returns
one error line, or ``None``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from metarun.configs import config_dir
from metarun.errors import EXIT_BAD_INPUT, exit_status

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
    swept keys; for an Optuna search, which draws the swept values itself, one job with a
    value of each swept key (:func:`_search_jobs` adds the config's own search space)."""
    if not multirun:
        return [overrides], []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    swept = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    if _is_search(overrides):
        return _value_jobs([_values(o) for o in parsed]), swept
    return BasicSweeper.split_arguments(parsed, None)[0], swept


def _key(override: str) -> str:
    """The key an override sets (``+a.b=1``, ``~a.b`` and ``a.b=1`` all set ``a.b``)."""
    return override.lstrip("+~").split("=", 1)[0]


def _is_search(overrides: list[str]) -> bool:
    return any(o.lstrip("+").startswith(("hparams_search=", "hydra/sweeper="))
               for o in overrides)


def _values(override: Any) -> list[str]:
    """A parsed override as the overrides an Optuna search's check composes: itself, or a
    sweep's values: every choice, a range's or an interval's ends."""
    if not override.is_sweep_override():
        return [str(override.input_line)]
    from hydra.core.override_parser.types import OverrideType

    if override.is_interval_sweep():
        values = [override.value().start, override.value().end]
    else:
        values = list(override.sweep_string_iterator())
        values = values if override.is_choice_sweep() else values[:1] + values[-1:]
    prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++"}.get(override.type, "")
    return [f"{prefix}{override.get_key_element()}={v}" for v in values]


def _value_jobs(values: list[list[str]]) -> list[list[str]]:
    """Jobs that between them set every key to each of its values (job i: each key's value
    i, or its last): as many jobs as the longest list, not every combination."""
    return [[v[min(i, len(v) - 1)] for v in values]
            for i in range(max((len(v) for v in values), default=1))]


def _search_jobs(jobs: list[list[str]], config_name: str) -> tuple[list[list[str]], list[str]]:
    """An Optuna search's jobs to check: ``jobs`` (the command line's) with the values of each
    key of the config's ``hydra.sweeper.params`` that the command line does not set; and
    those keys."""
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        params = compose(config_name=config_name, overrides=jobs[0],
                         return_hydra_config=True).hydra.sweeper.get("params") or {}
    except Exception:  # noqa: BLE001 - the job itself does not compose: _check_job says why
        return jobs, []
    given = {_key(o) for o in jobs[0]}
    space = [_values(o) for o in OverridesParser.create().parse_overrides(
        [f"{k}={v}" for k, v in params.items() if k not in given])]
    extra = _value_jobs(space)
    return [jobs[min(i, len(jobs) - 1)] + extra[min(i, len(extra) - 1)]
            for i in range(max(len(jobs), len(extra)))], [str(k) for k in params
                                                          if k not in given]


def _is_choice(override: str) -> bool:
    """Whether ``override`` chooses an option of a config group (or sets Hydra's own keys),
    rather than a value."""
    key = _key(override).split("@", 1)[0]
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

    search = multirun and _is_search(overrides)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        if search:
            jobs, space = _search_jobs(jobs, config_name)
            swept += space
        for i, job in enumerate(jobs):
            problem = _check_job(job, config_name, check_values=not flags & {"--cfg", "-c"})
            if problem:
                values = [o for o in job if _key(o) in swept]
                if search:  # a composed point, not a trial: the keys the message names
                    values = [o for o in values if _names(problem, _key(o))] or values
                where = "the search space at" if search else f"sweep job {i}:"
                return problem + (f" ({where} {' '.join(values)})" if values else "")
    return None


def _names(message: str, key: str) -> bool:
    """Whether ``message`` names the config key ``key`` (not as part of a longer key)."""
    return re.search(rf"(?<![\w.]){re.escape(key)}(?![\w.])", message) is not None


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
        key = _key(arg)
        if key in renamed:
            return f"{key} is now {renamed[key]} (the same key in every metarun command)"
    return None
