"""Run the installed ``metarun`` command as a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

TINY = ["train.iterations=4", "train.meta_batch=2", "train.eval_every=2", "train.log_every=2",
        "eval.val_episodes=4", "eval.test_episodes=8", "task.queries=2",
        "train.plot=false"]


#: Console scripts and the modules behind them.
MODULES = {"metarun": "metarun.cli.train", "metarun-eval": "metarun.cli.evaluate",
           "metarun-report": "metarun.cli.report", "metarun-ensemble": "metarun.cli.ensemble"}


def command(name: str = "metarun") -> list[str]:
    """The console script next to this interpreter (what ``pip install`` put there)."""
    script = Path(sys.executable).with_name(name)
    if script.exists():
        return [str(script)]
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", MODULES[name]]


def metarun_command() -> list[str]:
    return command("metarun")


def metarun(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300,
            name: str = "metarun") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command(name), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def pid_with_environment(*entries: str, timeout: float = 60) -> int:
    """The pid of a process whose environment holds every ``KEY=value`` of ``entries`` (a
    test's mark and, say, ``RANK=1``), waiting up to ``timeout`` seconds for it to start."""
    wanted = [e.encode() for e in entries]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, ValueError):
                continue
            if all(w in environ for w in wanted):
                return int(entry.name)
        time.sleep(0.1)
    raise AssertionError(f"no process with {' '.join(entries)} within {timeout} s")
