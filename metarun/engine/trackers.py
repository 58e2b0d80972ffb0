"""Where the points of ``metrics.jsonl`` also go (``logger=`` in the config): a CSV file,
MLflow, Weights & Biases, and the guard that keeps a failing tracker from failing the run.

Every sink is built with the run directory, the resolved config and, for a resumed run, the
first step it re-does (``purge_step``); it gets every point (``write``) and, once the run's
summary is written, how the run ended (``close(status)``). A resumed run continues the same
tracker run: the sinks keep their run ids in ``<run dir>/trackers.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

from metarun.configs import leaves
from metarun.engine.lock import taking_turns
from metarun.engine.metrics import MetricsSink

log = logging.getLogger("metarun")

#: The run ids of the trackers, in the run directory.
IDS_FILE = "trackers.json"


class GuardedSink:
    """A sink whose failure is a warning, once: after it the run goes on without it."""

    def __init__(self, name: str, sink: MetricsSink) -> None:
        self.name, self.sink, self.failed = name, sink, False

    def _guard(self, what: str, call: Any, *args: Any) -> None:
        if self.failed:
            return
        try:
            call(*args)
        except Exception as e:  # noqa: BLE001 - whatever the tracker's library raises
            self.failed = True
            log.warning("logger %s failed (%s: %s: %s); the run goes on without it",
                        self.name, what, type(e).__name__, e)

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        self._guard("write", self.sink.write, step, split, values)

    def close(self, status: str = "completed") -> None:
        self._guard("close", self.sink.close, status)


def start(name: str, make: Callable[[], MetricsSink]) -> GuardedSink | None:
    """The sink ``make()`` builds, guarded; ``None`` (and a warning) when it cannot start. A
    missing optional package is still an error: the user asked for that logger."""
    from metarun.errors import MissingExtraError

    try:
        return GuardedSink(name, make())
    except Exception as e:  # noqa: BLE001 - whatever the tracker's library raises
        cause: BaseException | None = e
        while cause is not None:  # through Hydra's instantiation wrapper
            if isinstance(cause, MissingExtraError):
                raise cause from None
            cause = cause.__cause__
        log.warning("logger %s could not start (%s: %s); the run goes on without it", name,
                    type(e).__name__, e)
        return None


def _ids(run_dir: Path) -> dict[str, str]:
    try:
        return dict(json.loads((run_dir / IDS_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def remember_id(run_dir: Path, tracker: str, run_id: str) -> None:
    ids = {**_ids(run_dir), tracker: run_id}
    (run_dir / IDS_FILE).write_text(json.dumps(ids, indent=1) + "\n", encoding="utf-8")


def resumed_id(run_dir: Path, tracker: str, purge_step: int | None) -> str | None:
    """The tracker's run id of the interrupted process, when this one resumes it."""
    return _ids(run_dir).get(tracker) if purge_step is not None else None


def flat_params(config: dict[str, Any] | None) -> dict[str, str]:
    """The resolved config as ``{dotted key: value}`` (the trackers' parameters)."""
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v)
            for k, v in leaves(config or {}, lists=False)}


def run_tags(config: dict[str, Any] | None) -> dict[str, str]:
    """``algo`` and ``data``: the class names of the run's algorithm and dataset."""
    config = config or {}
    return {key: str((config.get(key) or {}).get("_target_", "?")).rsplit(".", 1)[-1]
            for key in ("algo", "data")}


class CsvSink:
    """``<run dir>/<file>``: one row per value, ``step,split,name,value`` (long format: any
    set of metrics, one header). A resumed run drops the rows of the steps it re-does."""

    FIELDS = ("step", "split", "name", "value")

    def __init__(self, run_dir: str | Path, file: str = "metrics.csv",
                 purge_step: int | None = None, run_config: dict[str, Any] | None = None) -> None:
        self.path = Path(run_dir) / file
        kept: list[dict[str, str]] = []
        if purge_step is not None and self.path.exists():
            with self.path.open(newline="", encoding="utf-8") as f:
                kept = [r for r in csv.DictReader(f)
                        if r.get("split") != "test" and int(r.get("step") or 0) < purge_step]
        self._file = self.path.open("w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=self.FIELDS)
        self._writer.writeheader()
        self._writer.writerows(kept)
        self._file.flush()

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        self._writer.writerows({"step": step, "split": split, "name": k, "value": v}
                               for k, v in values.items())
        self._file.flush()

    def close(self, status: str = "completed") -> None:
        self._file.close()


def _artifacts(run_dir: Path, checkpoint: bool) -> list[Path]:
    names = ["summary.json", "learning_curve.png", *(["checkpoints/best.pt"] if checkpoint
                                                      else [])]
    return [run_dir / n for n in names if (run_dir / n).exists()]


class MLflowSink:
    """An MLflow run: params are the flattened resolved config, metrics every point of
    ``metrics.jsonl`` (``<split>/<name>`` at its step), tags ``algo``, ``data`` and
    ``status``; when the run ends, its summary and learning curve as artifacts (and the best
    checkpoint with ``log_checkpoint``).

    Args:
        tracking_uri: a tracking server or store (default: a SQLite store in the output
            root, ``./outputs/mlflow.db``, with the artifacts in ``./outputs/mlartifacts``;
            MLflow 3 keeps its file store only in maintenance mode).
        experiment_name: the MLflow experiment (created if missing).
        run_name: the MLflow run's name (default: the run directory's).
    """

    def __init__(self, run_dir: str | Path, purge_step: int | None = None,
                 run_config: dict[str, Any] | None = None, tracking_uri: str | None = None,
                 experiment_name: str = "metarun", run_name: str | None = None,
                 log_checkpoint: bool = False) -> None:
        from metarun.extras import require

        require("mlflow")
        from mlflow.tracking import MlflowClient

        self.run_dir, self.log_checkpoint = Path(run_dir), log_checkpoint
        root = (Path.cwd() / "outputs").resolve()
        if tracking_uri is None:
            root.mkdir(parents=True, exist_ok=True)
        uri = tracking_uri or f"sqlite:///{root}/mlflow.db"
        # The first use of a SQLite store creates and migrates its tables, and the first run
        # of an experiment creates it: parallel sweep jobs doing either at once fail ("table
        # already exists", "duplicate column"), so the jobs sharing a store start one at a time.
        sqlite = uri.startswith("sqlite:///")
        with taking_turns(uri[len("sqlite:///"):] + ".lock") if sqlite else nullcontext():
            self.client = MlflowClient(tracking_uri=uri)
            resumed = resumed_id(self.run_dir, "mlflow", purge_step)
            if resumed is None:
                artifacts = None if tracking_uri else (root / "mlartifacts").as_uri()
                resumed = self._start(run_config, experiment_name, run_name, artifacts)
                remember_id(self.run_dir, "mlflow", resumed)
            self.run_id: str = resumed
            self.client.set_tag(self.run_id, "status", "running")

    def _start(self, run_config: dict[str, Any] | None, experiment_name: str,
               run_name: str | None, artifacts: str | None) -> str:
        from mlflow.entities import Param

        experiment = self.client.get_experiment_by_name(experiment_name)
        experiment_id = (experiment.experiment_id if experiment is not None else
                         self.client.create_experiment(experiment_name, artifacts))
        run = self.client.create_run(experiment_id, run_name=run_name or self.run_dir.name,
                                     tags={**run_tags(run_config),
                                           "run_dir": str(self.run_dir)})
        params = [Param(k, v[:6000]) for k, v in flat_params(run_config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(run.info.run_id, params=params[i:i + 100])
        return str(run.info.run_id)

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(f"{split}/{k}", float(v), now, step) for k, v in values.items()])

    def close(self, status: str = "completed") -> None:
        self.client.set_tag(self.run_id, "status", status)
        for path in _artifacts(self.run_dir, self.log_checkpoint):
            self.client.log_artifact(self.run_id, str(path))
        state = {"completed": "FINISHED", "preempted": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.run_id, state)


class WandbSink:
    """A Weights & Biases run in ``<run dir>/wandb``: the same params (``config``), metrics
    and tags as :class:`MLflowSink`. Offline unless credentials are set (``WANDB_API_KEY`` or
    ``wandb login``), so it works without a network; ``wandb sync <run dir>/wandb/offline-*``
    uploads it later.

    Args:
        project: the W&B project.
        mode: ``online``, ``offline`` or ``null`` (offline without credentials).
        entity: the W&B entity (team or user).
    """

    def __init__(self, run_dir: str | Path, purge_step: int | None = None,
                 run_config: dict[str, Any] | None = None, project: str = "metarun",
                 mode: str | None = None, entity: str | None = None) -> None:
        from metarun.extras import require

        require("wandb")
        import wandb

        self.run_dir = Path(run_dir)
        run_id = resumed_id(self.run_dir, "wandb", purge_step) or uuid.uuid4().hex[:8]
        tags = run_tags(run_config)
        self.run = wandb.init(
            project=project, entity=entity, dir=str(self.run_dir), id=run_id, resume="allow",
            mode=cast(Any, mode or ("online" if wandb.api.api_key else "offline")),
            name=self.run_dir.name, config=flat_params(run_config),
            tags=[f"{k}:{v}" for k, v in tags.items()], reinit="create_new")
        remember_id(self.run_dir, "wandb", run_id)

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        named = {f"{split}/{k}": v for k, v in values.items()}
        if split == "test":  # logged at the best step, before the last: W&B's steps only grow
            self.run.summary.update(named)
        else:
            self.run.log(named, step=step)

    def close(self, status: str = "completed") -> None:
        self.run.summary["status"] = status
        self.run.finish(exit_code=0 if status == "completed" else 1)
