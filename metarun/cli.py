"""The ``metarun`` command: the one ``@hydra.main``."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig

from metarun.sweep import FAILED_JOBS, register_resolvers

register_resolvers()  # before Hydra composes the config


def _config_dir() -> str:
    """``conf/`` inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"metarun's conf/ folder is missing next to {here}; reinstall metarun")


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


#: Exit statuses of a single run (README, "Failure and recovery").
EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_NON_FINITE, EXIT_LOCKED, EXIT_PREEMPTED = (
    0, 1, 2, 3, 4, 75)


def unwrap(raised: Exception) -> Exception:
    """A component that refused its arguments: its own error, not Hydra's wrapper."""
    from hydra.errors import InstantiationException

    if isinstance(raised, InstantiationException) and isinstance(raised.__cause__, Exception):
        return raised.__cause__
    return raised


def exit_status(error: BaseException) -> int | None:
    """The exit status for an expected failure, or ``None`` for a bug (shown in full)."""
    from metarun.data.omniglot import CorruptDatasetError
    from metarun.device import DeviceUnavailableError
    from metarun.engine.lock import RunLockedError
    from metarun.engine.trainer import NonFiniteLossError, Preempted
    from metarun.extras import MissingExtraError

    if isinstance(error, Preempted):
        return EXIT_PREEMPTED
    if isinstance(error, NonFiniteLossError):
        return EXIT_NON_FINITE
    if isinstance(error, RunLockedError):
        return EXIT_LOCKED
    if isinstance(error, (ValueError, OSError, DeviceUnavailableError, CorruptDatasetError,
                          MissingExtraError)):
        return EXIT_BAD_INPUT  # includes missing or corrupt data and unwritable folders
    return None


@hydra.main(version_base="1.3", config_path=_config_dir(), config_name="config")
def _app(cfg: DictConfig) -> float:
    import logging

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from metarun.run import RunCompletedError, run
    from metarun.types import RunResult

    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.output_dir
    try:
        return run(cfg, output_dir).objective
    except Exception as raised:
        e = unwrap(raised)
        status = exit_status(e)
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        if multirun and isinstance(e, RunCompletedError):  # a re-run sweep: keep its result
            import json

            logging.getLogger("metarun").info("job %s already completed; skipped",
                                              hydra_cfg.job.num)
            summary = json.loads((e.directory / "summary.json").read_text(encoding="utf-8"))
            return RunResult(summary, str(e.directory)).objective
        if multirun and status != EXIT_PREEMPTED:
            # One failed job must not stop the sweep: record it and go on; main() exits
            # non-zero at the end. (A stop signal does stop the sweep.)
            logging.getLogger("metarun").error("job %s failed: %s", hydra_cfg.job.num, e,
                                               exc_info=status is None)
            _record_failure(Path(output_dir), e)  # SweepReport lists it when the sweep ends
            return float("nan")
        if status is None:
            raise
        # An expected failure: one line that says what to do, not a traceback.
        logging.getLogger("metarun").error("%s", e)
        sys.exit(status)


def _record_failure(output_dir: Path, error: Exception) -> None:
    """Make sure a failed job's directory says so (run() writes this itself once training
    has started)."""
    import json

    summary = output_dir / "summary.json"
    if not summary.exists():
        output_dir.mkdir(parents=True, exist_ok=True)
        summary.write_text(json.dumps({"status": "failed",
                                       "error": f"{type(error).__name__}: {error}"}) + "\n",
                           encoding="utf-8")


def check_output_dir(argv: list[str]) -> str | None:
    """Create the run (or sweep) directory named on the command line, if any; return an error
    line when it cannot be created or written (Hydra would fail on it with a traceback)."""
    import os

    for arg in argv:
        key, _, value = arg.partition("=")
        if key not in ("hydra.run.dir", "hydra.sweep.dir") or not value or "$" in value:
            continue
        path = Path(value).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return f"{key} = {value} cannot be created: {e.strerror or e}"
        if not os.access(path, os.W_OK):
            return f"{key} = {value} is not writable"
    return None


def check_overrides(argv: list[str], config_name: str = "config") -> str | None:
    """Compose the config of a single run (no ``-`` flags) the way ``@hydra.main`` will, and
    return one line naming an unknown key or option, instead of Hydra's multi-line report."""
    if any(arg.startswith("-") for arg in argv):
        return None  # --help, --cfg, -m ...: Hydra's own handling
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException

    try:
        with initialize_config_dir(config_dir=_config_dir(), version_base="1.3"):
            compose(config_name=config_name, overrides=argv)
    except MissingConfigException as e:
        options = ", ".join(e.options or [])
        return (f"unknown option {e.missing_cfg_file!r}"
                + (f"; choose one of: {options}" if options else ""))
    except ConfigCompositionException as e:
        cause = str(e.__cause__).splitlines()[0] if e.__cause__ else ""
        first = str(e).splitlines()
        hint = f" ({first[1].strip()})" if len(first) > 1 else ""
        return f"{first[0]} {cause}{hint}".strip()
    except Exception as e:  # noqa: BLE001 - any other composition error, in one line
        return " ".join(str(e).split())
    return None


#: Command-line choices that need an optional extra (metarun.extras).
_NEEDS_EXTRA = (("hparams_search=", "sweep"), ("hydra/sweeper=optuna", "sweep"),
                ("hydra/launcher=joblib", "joblib"), ("logger=tensorboard", "tensorboard"))


def check_extras(argv: list[str]) -> str | None:
    """An error line when the command line asks for an optional feature that is not installed,
    or for an Optuna search without ``-m``."""
    from metarun.extras import MissingExtraError, require

    multirun = any(a in ("-m", "--multirun") for a in argv)
    for arg in argv:
        for prefix, extra in _NEEDS_EXTRA:
            if arg.lstrip("+").startswith(prefix) and not arg.endswith("=null"):
                try:
                    require(extra)
                except MissingExtraError as e:
                    return str(e)
                if extra == "sweep" and not multirun:
                    return f"{arg} runs an Optuna search over many runs: add -m (--multirun)"
    return None


def run_app(prog: str, app: Callable[[], object], problem: str | None,
            failed: list[str]) -> None:
    """A Hydra app's console script: a problem found before Hydra starts is one error line and
    status 2; jobs of a sweep that did not complete are listed at the end, status 1."""
    if problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    app()
    if failed:
        print(f"{prog}: {len(failed)} job(s) of the sweep did not complete:", *failed,
              sep="\n  ", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def main() -> None:
    """Console-script entry point."""
    sys.argv = [sys.argv[0], *expand_device_shorthand(sys.argv[1:])]
    argv = sys.argv[1:]
    run_app("metarun", _app,
            check_extras(argv) or check_overrides(argv) or check_output_dir(argv), FAILED_JOBS)


if __name__ == "__main__":
    main()
