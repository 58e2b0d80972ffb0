"""Nothing is written into a directory until the job has made sure it is its own.

Hydra would write ``.hydra/`` and open the job's log in the output directory before the job
runs, so a command that must refuse the directory (it holds a completed run, another
command's result, a different experiment, or a process is working in it) would already have
rewritten it. metarun therefore turns Hydra's own saving off (``hydra.output_subdir: null``),
and its log file (:class:`DeferredFileHandler`) keeps records in memory. A job checks the
directory first and then calls :func:`claim`, which writes Hydra's three files exactly as
Hydra would and starts the log; a job refused before that leaves the directory byte-identical.
"""

from __future__ import annotations

import json
import logging
import weakref
from pathlib import Path
from typing import Any

#: Files and folders that only a job's own results put in a directory.
RESULT_FILES = ("summary.json", "metrics.jsonl", "checkpoints", ".hydra")

_claimed: set[Path] = set()


class OutputDirError(ValueError):
    """The output directory holds another job's results (refused before anything is
    written)."""


def read_summary(directory: Path) -> dict[str, Any] | None:
    """``summary.json`` of ``directory`` as a dict, ``{}`` when it is missing, ``None`` when
    it is there but not a JSON object (damaged)."""
    path = directory / "summary.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_summary(directory: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``directory/summary.json`` atomically (a reader sees the old file or the new one,
    never half of one); every metarun command writes its summary through this."""
    import os

    path = Path(directory) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def is_training_summary(summary: dict[str, Any]) -> bool:
    """Whether ``summary`` was written by a ``metarun`` training run (not by ``metarun-eval``,
    ``metarun-ensemble`` or anything else)."""
    return "status" in summary and "command" not in summary and "method" not in summary


def describe(summary: dict[str, Any]) -> str:
    """What wrote ``summary``, in words."""
    if summary.get("command") == "metarun-eval":
        return "a metarun-eval result"
    if "method" in summary:
        return "a metarun-ensemble result"
    if is_training_summary(summary):
        return f"a {summary['status']} metarun run"
    return "a summary.json that metarun did not write"


def refuse_results(directory: str | Path, key: str) -> None:
    """Refuse ``directory`` (named by the option ``key``) when it is a file or holds any job's
    results; a missing or empty directory, or one with only unrelated files, is fine.

    Raises:
        OutputDirError: one line naming what is there.
    """
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{key} = {path} is a file, not a directory")
    found = [name for name in RESULT_FILES if (path / name).exists()]
    if found:
        summary = read_summary(path)
        what = describe(summary) if summary else "another job's results"
        raise OutputDirError(f"{key} = {path} already holds {what} ({', '.join(found)}); "
                             f"choose another {key}, nothing was written")


def claim(directory: str | Path, config: Any = None) -> None:
    """Make ``directory`` this job's: write Hydra's ``.hydra/`` files for the job's ``config``
    (when running under Hydra) and start the job's log there. Call it once every check has
    passed."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _claimed.add(out.resolve())
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    from omegaconf import OmegaConf

    hydra_cfg: Any = HydraConfig.instance().cfg  # {"hydra": ...}, as Hydra saves it
    assert hydra_cfg is not None
    files = {"config.yaml": config, "hydra.yaml": hydra_cfg,
             "overrides.yaml": hydra_cfg.hydra.overrides.task}
    folder = out / ".hydra"
    folder.mkdir(exist_ok=True)
    for name, node in files.items():
        if node is not None:
            (folder / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")
    DeferredFileHandler.start_all(out)
    hydra_dir = Path(hydra_cfg.hydra.runtime.output_dir)
    if hydra_dir.resolve() != out.resolve():  # train.resume: the run goes on in its own folder
        try:
            hydra_dir.rmdir()  # Hydra made it for this job, and it is empty
        except OSError:
            pass


def claimed(directory: str | Path) -> bool:
    """Whether this process has claimed ``directory`` (so a failure may be recorded there)."""
    return Path(directory).resolve() in _claimed


class DeferredFileHandler(logging.FileHandler):
    """A job's log file that holds its records in memory until :func:`claim` names the
    directory it belongs in (Hydra's ``job_logging`` builds it with the default location)."""

    _live: weakref.WeakSet[DeferredFileHandler] = weakref.WeakSet()

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = "utf-8") -> None:
        super().__init__(filename, mode, encoding, delay=True)
        self._held: list[logging.LogRecord] | None = []
        DeferredFileHandler._live.add(self)

    def emit(self, record: logging.LogRecord) -> None:
        if self._held is not None:
            self._held.append(record)
        else:
            super().emit(record)

    def start(self, directory: Path) -> None:
        """Write the held records, and every later one, to this log's file in ``directory``."""
        if self._held is None:
            return
        held, self._held = self._held, None
        self.baseFilename = str((directory / Path(self.baseFilename).name).resolve())
        for record in held:
            super().emit(record)

    @classmethod
    def start_all(cls, directory: Path) -> None:
        for handler in list(cls._live):
            handler.start(directory)

    def close(self) -> None:
        if self._held is not None:
            self._held.clear()  # a refused job's records go nowhere (they were on the console)
        super().close()
