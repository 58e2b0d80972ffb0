"""Optuna studies as metarun stores them: one place that turns ``hydra.sweeper.storage`` into
an Optuna storage, for the search that writes a study, the trials that report to it and the
report that reads it.

A storage is named by one string:

* a database URL (``sqlite:///search.db``, ``postgresql://...``): Optuna's RDB storage; a
  relative SQLite path is relative to the directory the command was started in;
* anything else, a file path: Optuna's journal storage (``search.journal``), an append-only
  log that several processes may share on one file system;
* nothing (``None``): the journal file ``optuna.journal`` in the sweep directory.

All three open in optuna-dashboard (``optuna-dashboard sqlite:///search.db`` or
``optuna-dashboard <sweep dir>/optuna.journal``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

#: The journal of a search that names no storage, in its sweep directory.
DEFAULT_JOURNAL = "optuna.journal"
#: What each trial of a metarun search records (``trial.user_attrs``).
RUN_DIR, SWEEP_DIR, SWEEPER, OVERRIDES = "run_dir", "sweep_dir", "sweeper", "overrides"
#: What a study records of the command that started it (``study.user_attrs``).
COMMAND = "metarun_command"
#: How long a SQLite writer waits for another's lock (parallel trials report at once).
SQLITE_TIMEOUT_S = 60


def storage_location(spec: str | None, sweep_dir: str | Path, cwd: str | Path) -> str:
    """Where ``spec`` stores a study: a database URL, or an absolute journal file path."""
    if spec is None or str(spec).strip() == "":
        return str((Path(cwd) / sweep_dir / DEFAULT_JOURNAL).resolve())
    spec = str(spec)
    if "://" in spec:
        prefix = "sqlite:///"
        if spec.startswith(prefix) and not spec[len(prefix):].startswith(("/", ":memory:")):
            return prefix + str((Path(cwd) / spec[len(prefix):]).resolve())
        return spec
    return str((Path(cwd) / Path(spec).expanduser()).resolve())


def open_storage(spec: str | None, sweep_dir: str | Path = ".",
                 cwd: str | Path = ".") -> BaseStorage:
    """The Optuna storage ``spec`` names (see the module docstring).

    Raises:
        ValueError: the database URL cannot be opened (the message names it).
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    where = storage_location(spec, sweep_dir, cwd)
    if "://" not in where:
        Path(where).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(where))
    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if where.startswith("sqlite") \
        else {}
    try:
        return optuna.storages.RDBStorage(where, engine_kwargs=kwargs)
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors for a URL it cannot open
        raise ValueError(f"hydra.sweeper.storage = {spec}: cannot open it: "
                         f"{type(e).__name__}: {e}") from e
