"""Trackers with the real libraries: an MLflow run read back with ``MlflowClient`` holds the
params and every metric point of ``metrics.jsonl``; a W&B offline run's files hold the same;
CSV; two loggers at once; a resumed run continues its tracker run; a tracker that fails does
not fail the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from metarun.engine.trackers import GuardedSink
from metarun.jobs.train import run
from tests.helpers import compose_config
from tests.integration.cli import metarun

SINE = ["data=sinusoid", "device=cpu", "train.iterations=4", "train.eval_every=2",
        "train.log_every=1", "eval.val_episodes=4", "eval.test_episodes=4"]


def _points(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{"<split>/<name>": [(step, value), ...]}`` of metrics.jsonl."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key not in ("step", "split") and isinstance(value, (int, float)):
                out.setdefault(f"{record['split']}/{key}", []).append((record["step"], value))
    return out


def _mlflow_run(root: Path) -> tuple[Any, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root}/outputs/mlflow.db")
    experiment = client.get_experiment_by_name("metarun")
    (found,) = client.search_runs([experiment.experiment_id])
    return client, found


def test_mlflow_gets_the_params_every_point_tags_and_artifacts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # the default store: ./outputs/mlflow.db
    out = tmp_path / "run"
    run(compose_config(*SINE, "logger=mlflow", "train.plot=true"), out)
    client, found = _mlflow_run(tmp_path)
    assert found.data.params["train.iterations"] == "4"
    assert found.data.params["algo._target_"] == "metarun.algorithms.maml.MAML"
    assert (found.data.tags["algo"], found.data.tags["data"], found.data.tags["status"]) == (
        "MAML", "Sinusoid", "completed")
    assert found.info.status == "FINISHED"
    for key, points in _points(out).items():
        history = client.get_metric_history(found.info.run_id, key)
        assert sorted((m.step, m.value) for m in history) == pytest.approx(sorted(points)), key
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"summary.json", "learning_curve.png"} <= artifacts


def test_a_resumed_run_continues_its_mlflow_run(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    run(compose_config(*SINE, "logger=mlflow", "train.plot=false"), out)
    first = json.loads((out / "trackers.json").read_text())["mlflow"]
    run(compose_config(*SINE[:2], "train.iterations=6", *SINE[3:], "logger=mlflow",
                       "train.plot=false"), out)  # the completed run, trained further
    client, found = _mlflow_run(tmp_path)  # still one run
    assert found.info.run_id == first
    steps = {m.step for m in client.get_metric_history(first, "val/mse")}
    assert {2, 4, 6} <= steps


def _wandb_records(run_dir: Path) -> list[Any]:
    """The records of the run's ``.wandb`` file: a LevelDB-style log (a 7-byte header
    ``:W&B``, magic, version; then 32 KiB blocks of records, each with a 7-byte header: CRC,
    length, type full/first/middle/last), each record a ``wandb_internal_pb2.Record``. Read
    here because wandb 0.31 no longer ships a Python reader."""
    import struct

    from wandb.proto import wandb_internal_pb2

    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, offset, block = [], b"", 7, 32768
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # too little room for a header: padding
            offset += block - offset % block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
        if length == 0 and kind == 0:  # zero padding to the end of a block
            offset += block - offset % block
            continue
        pending += data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # full, last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_files_hold_the_params_and_every_point(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    for key in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    run(compose_config(*SINE, "logger=wandb", "train.plot=false"), out)
    # run.finish() may return before W&B's service has written the whole offline file; the
    # service is flushed at the process's exit (an atexit hook), which is this, in-process
    import wandb

    wandb.teardown()
    records = _wandb_records(out)
    updates = [item for r in records for item in
               (r.run.config.update if r.HasField("run") else
                r.config.update if r.HasField("config") else [])]
    config = {item.key: json.loads(item.value_json) for item in updates}
    assert config["train.iterations"] == "4"
    logged: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if r.HasField("history"):
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for item in r.history.item}
            for key, value in row.items():
                if not key.startswith("_"):
                    logged.setdefault(key, []).append((int(row["_step"]), value))
    for key, points in _points(out).items():
        if not key.startswith("test/"):  # the test point is in the run's summary
            assert sorted(logged[key]) == pytest.approx(sorted(points)), key


def test_two_loggers_at_once_and_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    run(compose_config(*SINE, "logger=[csv,mlflow]", "train.plot=false"), out)
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,split,name,value"
    val = [r.split(",") for r in rows[1:] if ",val,mse," in r]
    assert [(int(s), float(v)) for s, _, _, v in val] == pytest.approx(_points(out)["val/mse"])
    _, found = _mlflow_run(tmp_path)
    assert found.data.tags["status"] == "completed"


def test_parallel_sweep_jobs_start_their_mlflow_runs_in_one_new_store(
        tmp_path: Path, env: dict[str, str]) -> None:
    """Two joblib workers that meet a new SQLite store both create its tables unless they
    take turns (measured before the fix: 2 of these 6 jobs lost their MLflow run)."""
    pytest.importorskip("mlflow")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    proc = metarun(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "logger=mlflow",
                    "seed=0,1,2,3,4,5", *SINE, "train.plot=false",
                    f"hydra.sweep.dir={tmp_path / 'sweep'}"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "logger mlflow could not start" not in proc.stdout + proc.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/outputs/mlflow.db")
    experiment = client.get_experiment_by_name("metarun")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["run_dir"] for r in runs) == [
        str(tmp_path / "sweep" / str(n)) for n in range(6)]
    for r in runs:
        assert r.info.status == "FINISHED"
        points = _points(Path(r.data.tags["run_dir"]))["train/loss"]
        history = client.get_metric_history(r.info.run_id, "train/loss")
        assert sorted((m.step, m.value) for m in history) == pytest.approx(sorted(points))


def test_a_run_whose_summary_cannot_be_written_ends_its_tracker_run_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    import metarun.jobs.train as job

    real = job.write_summary

    def full_disk(directory: Path, summary: dict[str, Any]) -> Path:
        if summary.get("status") == "completed":
            raise OSError(28, "No space left on device")
        return real(directory, summary)

    monkeypatch.setattr(job, "write_summary", full_disk)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        run(compose_config(*SINE, "logger=mlflow", "train.plot=false"), tmp_path / "run")
    _, found = _mlflow_run(tmp_path)  # ended, not left RUNNING
    assert (found.info.status, found.data.tags["status"]) == ("FAILED", "failed")


def test_a_tracker_that_cannot_start_is_a_warning_not_a_failed_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("mlflow")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    out = tmp_path / "run"
    result = run(compose_config(*SINE, "logger=[csv,mlflow]", "train.plot=false",
                                f"logger.mlflow.tracking_uri=sqlite:///{blocked}/mlflow.db"),
                 out)
    assert result.summary["status"] == "completed"
    assert "logger mlflow could not start" in caplog.text
    assert (out / "metrics.csv").exists()  # the other logger still ran


class _Breaks:
    """A tracker whose backend fails at its third point."""

    def __init__(self) -> None:
        self.points = 0

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        self.points += 1
        if self.points == 3:
            raise ConnectionError("tracking server gone")

    def close(self, status: str = "completed") -> None:
        raise AssertionError("not called after a failure")


def test_a_tracker_that_fails_mid_run_warns_once_and_is_dropped(
        caplog: pytest.LogCaptureFixture) -> None:
    backend = _Breaks()
    sink = GuardedSink("server", backend)
    for step in range(1, 6):
        sink.write(step, "train", {"loss": 1.0})
    sink.close("completed")
    assert backend.points == 3
    assert caplog.text.count("logger server failed") == 1
    assert "tracking server gone" in caplog.text
