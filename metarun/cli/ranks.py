"""The command line of a process that a launcher (torchrun, ``dist.nproc``) started as one
rank of a data-parallel run."""

from __future__ import annotations


def follower_args(argv: list[str]) -> list[str]:
    """Under a launcher, a rank other than 0 writes nothing of its own: Hydra's directory for
    it (a timestamp that would differ from rank 0's) is a temporary one, removed at exit; the
    run's directory is rank 0's."""
    from metarun.engine.distributed import env_rank

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
    from metarun.engine.distributed import env_world_size

    if env_world_size() > 1 and any(a in ("-m", "--multirun") for a in argv):
        return ("a sweep (-m) cannot run under torchrun: sweep with dist.nproc=N instead, "
                "or start torchrun once per run")
    return None
