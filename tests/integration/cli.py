"""Run the installed ``metarun`` command as a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

TINY = ["train.iterations=4", "train.meta_batch=2", "train.eval_every=2", "train.log_every=2",
        "eval.val_episodes=4", "eval.test_episodes=8", "task.queries=2",
        "train.plot=false"]


def metarun_command() -> list[str]:
    """The console script next to this interpreter (what ``pip install`` put there)."""
    script = Path(sys.executable).with_name("metarun")
    if script.exists():
        return [str(script)]
    found = shutil.which("metarun")
    return [found] if found else [sys.executable, "-m", "metarun.cli"]


def metarun(args: list[str], env: dict[str, str], cwd: Path,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*metarun_command(), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
