"""No command damages a finished run: refused commands leave a run directory byte-identical,
re-run sweeps skip a job only when its config is the completed run's, and a run whose training
is done (or whose summary was lost) is completed by running it again."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from metarun.engine.checkpoint import load_checkpoint
from metarun.engine.lock import RunLock
from metarun.errors import OutputDirError
from metarun.jobs.train import run
from tests.helpers import compose_config
from tests.integration.cli import metarun, metarun_command

SINE = ["device=cpu", "data=sinusoid", "train.iterations=3", "train.eval_every=3",
        "train.log_every=1", "eval.val_episodes=2", "eval.test_episodes=4", "train.plot=false"]


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file and folder below ``root``: content hash and modification time."""
    out = {}
    for path in sorted(root.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(root))] = (digest, path.stat().st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def completed(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    """A completed MAML sinusoid run, made by the command (so it has .hydra/ and its log)."""
    root = tmp_path_factory.mktemp("done")
    proc = metarun([*SINE, "algo=maml", f"hydra.run.dir={root / 'run'}"], env, root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root / "run"


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if "ERROR" in line or "error:" in line]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


def test_refused_commands_leave_a_finished_run_byte_identical(completed: Path, tmp_path: Path,
                                                              env: dict[str, str]) -> None:
    before = snapshot(completed)
    there = f"hydra.run.dir={completed}"
    cases = [
        ("metarun", [*SINE, "algo=maml", there], 2, "already holds a completed run"),
        ("metarun", [*SINE, "algo=anil", "seed=7", there], 2,
         "completed run with different algo._target_"),
        ("metarun-eval", [f"checkpoint={completed}", "eval.ways=1", "device=cpu", there], 2,
         "already holds a completed metarun run"),
        ("metarun-ensemble", ["average", str(completed), str(completed),
                              f"hydra.run.dir={completed}", "device=cpu"], 2,
         "hydra.run.dir = " + str(completed) + " already holds"),
    ]
    for command, args, status, expected in cases:
        proc = metarun(args, env, tmp_path, name=command)
        assert proc.returncode == status, (command, proc.stdout + proc.stderr)
        assert expected in _one_error_line(proc)
        assert snapshot(completed) == before, (command, args)
    with RunLock(completed):  # another process is working there
        locked = snapshot(completed)  # the lock file now names this process
        proc = metarun([*SINE, "algo=maml", there], env, tmp_path)
        assert proc.returncode == 4 and "another metarun process" in _one_error_line(proc)
        assert snapshot(completed) == locked


def test_ensemble_refuses_an_existing_file_before_any_work(completed: Path, tmp_path: Path,
                                                           env: dict[str, str]) -> None:
    (tmp_path / "taken").write_text("mine")
    proc = metarun(["average", str(completed), f"hydra.run.dir={tmp_path / 'taken'}"], env,
                   tmp_path, name="metarun-ensemble")
    assert proc.returncode == 2 and "is a file" in _one_error_line(proc)
    assert (tmp_path / "taken").read_text() == "mine"


def test_a_rerun_sweep_with_changed_values_keeps_the_completed_jobs(tmp_path: Path,
                                                                   env: dict[str, str]) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *SINE, "algo=maml", f"hydra.sweep.dir={sweep}"]
    first = metarun([*args, "algo.inner_lr=0.02,0.01"], env, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    jobs = [snapshot(sweep / str(i)) for i in (0, 1)]

    changed = metarun([*args, "algo.inner_lr=0.02,0.05"], env, tmp_path)
    assert "job 0 already completed; skipped" in changed.stdout  # the same config
    assert changed.returncode == 1
    assert "1 job(s) of the sweep did not complete" in changed.stderr
    assert "completed run with different algo.inner_lr" in changed.stderr
    assert [snapshot(sweep / str(i)) for i in (0, 1)] == jobs  # nothing rewritten
    # By column: a job's `seconds` can itself read 0.05 (it did once in CI).
    with (sweep / "report.csv").open(newline="") as f:
        rates = [row["algo.inner_lr"] for row in csv.DictReader(f)]
    assert "0.01" in rates and "0.05" not in rates, rates


def test_bad_values_in_a_sweep_are_refused_before_any_job(tmp_path: Path,
                                                          env: dict[str, str]) -> None:
    sweep = tmp_path / "sweep"
    proc = metarun(["-m", *SINE, "algo.inner_lr=0.01,abc", f"hydra.sweep.dir={sweep}"], env,
                   tmp_path)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "algo.inner_lr must be a number; got 'abc' (sweep job 1: algo.inner_lr=abc)" in line
    assert not sweep.exists()


def test_a_run_stopped_after_its_last_validation_is_completed_by_running_it_again(
        tmp_path: Path) -> None:
    cfg = compose_config(*SINE)
    first = run(cfg, tmp_path).summary
    summary = tmp_path / "summary.json"
    # As SIGTERM after the final validation leaves it: last.pt at the last step, preempted.
    summary.write_text(json.dumps({"status": "preempted", "resumable": True}))
    again = run(cfg, tmp_path).summary
    assert again["status"] == "completed" and again["resumed_from_step"] == 3
    assert again["test"] == first["test"]  # the same best checkpoint, the same episodes
    # A completed run whose summary was damaged is repaired the same way.
    summary.write_text("{ not json")
    assert run(cfg, tmp_path).summary["test"] == first["test"]
    # Past the checkpoint's step is an error that says what to do.
    with pytest.raises(ValueError, match="past train.iterations = 2"):
        summary.write_text(json.dumps({"status": "preempted", "resumable": True}))
        run(compose_config(*SINE, "train.iterations=2"), tmp_path)


def test_damaged_checkpoints_are_one_line_and_not_resumable(tmp_path: Path) -> None:
    cfg = compose_config(*SINE)
    run(cfg, tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"status": "preempted",
                                                       "resumable": True}))
    for name in ("last.pt", "last.prev.pt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no loadable checkpoint to resume from") as e:
        run(cfg, tmp_path)
    assert "\n" not in str(e.value) and "file an issue" not in str(e.value)
    assert json.loads((tmp_path / "summary.json").read_text())["resumable"] is False


def test_another_commands_result_is_not_a_training_run(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"command": "metarun-eval",
                                                       "status": "completed"}))
    before = snapshot(tmp_path)
    with pytest.raises(OutputDirError, match="holds a metarun-eval result"):
        run(compose_config(*SINE), tmp_path)
    assert snapshot(tmp_path) == before


def test_cfg_job_and_quoted_directories_create_nothing(tmp_path: Path,
                                                       env: dict[str, str]) -> None:
    proc = metarun(["--cfg", "job", f"hydra.run.dir={tmp_path / 'x'}"], env, tmp_path)
    assert proc.returncode == 0 and not (tmp_path / "x").exists()
    proc = metarun(["--cfg", "job", "nosuch.key=1"], env, tmp_path)
    assert proc.returncode == 2 and "nosuch.key" in _one_error_line(proc)
    proc = metarun(['hydra.run.dir="my run"', "train.iterations=abc"], env, tmp_path)
    assert proc.returncode == 2 and sorted(p.name for p in tmp_path.iterdir()) == []


def test_sigterm_while_the_data_is_decoded_is_a_preemption(tmp_path: Path,
                                                           env: dict[str, str]) -> None:
    run_dir = tmp_path / "run"
    cold = {**env, "METARUN_CACHE": str(tmp_path / "cold-cache")}  # decoding takes a while
    proc = subprocess.Popen([*metarun_command(), "device=cpu", "train.plot=false",
                             f"hydra.run.dir={run_dir}"], env=cold, cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (run_dir / ".hydra" / "config.yaml").exists():  # the run has claimed its folder
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 75, out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "preempted" and "before training started" in summary["error"]
    assert summary["resumable"] is True and not (run_dir / "checkpoints").exists()


def test_resume_keeps_its_log_in_the_run_it_continues(completed: Path, tmp_path: Path,
                                                      env: dict[str, str]) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(completed, run_dir)
    (run_dir / "summary.json").write_text(json.dumps({"status": "preempted",
                                                      "resumable": True}))
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 3
    proc = metarun([*SINE, "algo=maml", f"train.resume={run_dir}",
                    f"hydra.run.dir={tmp_path / 'new'}"], env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "meta-testing the best checkpoint" in (run_dir / "metarun.log").read_text()
    assert not (tmp_path / "new").exists()  # Hydra's empty folder for the invocation is gone
