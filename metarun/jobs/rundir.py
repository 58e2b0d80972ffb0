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

import logging
import weakref
from pathlib import Path
from typing import Any

from metarun.errors import OutputDirError, error_text
from metarun.summary import FAILED, describe, read_summary, write_summary

#: Files and folders that only a job's own results put in a directory.
RESULT_FILES = ("summary.json", "metrics.jsonl", "checkpoints", ".hydra")

_claimed: set[Path] = set()


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


def record_failure(output_dir: Path, error: BaseException, command: str) -> None:
    """Make sure a failed job's directory says so (a training run writes this itself once
    training has started)."""
    if not (output_dir / "summary.json").exists():
        write_summary(output_dir, {"command": command, "status": FAILED,
                                   "error": error_text(error)})
