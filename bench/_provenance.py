"""Where and from what a results row ran: the machine in words, the commit (``+changes`` only
when code or configuration differ from it), and the kept records (``bench/results.json``)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def hardware(device: str) -> str:
    """The machine in words: CPU model, cores, torch and its threads (and the GPU on cuda)."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = (f"{model}, {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads")
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


#: What a run executes (its code and configuration): a change elsewhere (docs, tests, or this
#: script's own records, written by an earlier invocation) does not make a row ``+changes``.
RUN_PATHS = ("metarun", "conf", "hydra_plugins", "bench", "pyproject.toml")
NOT_RUN = (":(exclude)bench/results.json",)


def commit(repo: Path) -> str:
    """The commit of the checkout at ``repo`` (``+changes`` when its code or configuration
    differs from it)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", *RUN_PATHS, *NOT_RUN)
    return head + ("+changes" if changed else "")


#: What a record keeps of a summary: what the table shows, and nothing machine-specific.
SUMMARY_KEYS = ("status", "metric", "steps", "stopped", "seconds", "eval_task", "paper")
TEST_KEYS = ("acc", "mse", "ci95", "episodes", "median", "diverged")


def load_records(path: Path) -> dict[str, dict[str, Any]]:
    """The kept rows of ``path`` by name (``{}`` when there is no such file)."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: not a results record ({err}); fix or remove it") from err
    if not isinstance(records, dict) or not all(isinstance(r, dict) and "command" in r
                                                for r in records.values()):
        raise SystemExit(f"{path}: not a results record (a JSON object of rows by name)")
    return records
