"""The command line of a process that a launcher (torchrun, ``dist.nproc``) started as one
rank of a data-parallel run."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn


def follower_args(argv: list[str]) -> list[str]:
    """Under a launcher, a rank other than 0 writes nothing of its own: Hydra's directory for
    it (a timestamp that would differ from rank 0's) is a temporary one, removed at exit; the
    run's directory is rank 0's."""
    from metarun.world import env_rank

    if env_rank() == 0:
        return argv
    import atexit
    import shutil
    import tempfile

    scratch = tempfile.mkdtemp(prefix=f"metarun-rank{env_rank()}-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return [*(a for a in argv if not a.startswith("hydra.run.dir=")), f"hydra.run.dir={scratch}"]


def check_launcher(argv: list[str]) -> str | None:
    """An error line for a sweep under torchrun (every rank would run the whole sweep)."""
    from metarun.world import env_world_size

    if env_world_size() > 1 and any(a in ("-m", "--multirun") for a in argv):
        return ("a sweep (-m) cannot run under torchrun: sweep with dist.nproc=N instead, "
                "or start torchrun once per run")
    return None


def end_rank(body: Callable[[], object]) -> NoReturn:
    """Run a rank's command, then end the process with ``os._exit`` and the command's exit
    status, after the exit handlers (the process group's destruction among them) and a flush.

    Why: a process with a gloo group can still abort as the interpreter finalizes ("terminate
    called without an active exception", exit -6) when C++ objects of torch.distributed are
    destroyed then (pytorch/pytorch#190489, #179291). Destroying the group at exit made it
    rarer but not impossible: a two-process run stopped by a NaN loss still aborted once in
    twelve here, so the launcher reported exit status 1 instead of the run's 3. Nothing is
    left to finalize once the handlers have run: summaries and checkpoints are written and
    closed, and the log handlers are flushed by ``logging``'s own exit handler.
    """
    import atexit
    import os
    import sys
    import traceback

    status = 0
    try:
        body()
    except SystemExit as e:  # what Python would print and return for it
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        status = 130
    except BaseException:  # noqa: BLE001 - printed as the interpreter would, status 1
        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()  # noqa: SLF001 - the handlers os._exit would skip
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)
