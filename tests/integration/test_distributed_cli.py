"""Data-parallel runs through the command line, two gloo processes on the sinusoid:
``metarun dist.nproc=2`` and ``torchrun -m metarun`` write one run in one directory (rank 0's),
with the one-process weights; a 2-process run resumes exactly, in 2 processes or in 1; a
SIGTERM to one rank stops both at one step with one checkpoint; a rank that dies makes the
run exit non-zero instead of hanging."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from metarun.engine.checkpoint import load_checkpoint
from tests.integration.cli import metarun, metarun_command, pid_with_environment

SINE = ["data=sinusoid", "device=cpu", "train.meta_batch=4", "train.eval_every=3",
        "train.log_every=1", "eval.val_episodes=8", "eval.test_episodes=8", "train.plot=false"]


@pytest.fixture
def dist_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The test environment with a temporary folder of its own (to see what is left in it)
    and a mark that finds this test's processes."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    return {**env, "TMPDIR": str(scratch), "METARUN_TEST_MARK": uuid.uuid4().hex}


def _run(args: list[str], env: dict[str, str], cwd: Path, run_dir: Path,
         ) -> subprocess.CompletedProcess[str]:
    done = metarun([*SINE, *args, f"hydra.run.dir={run_dir}"], env, cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["algorithm"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=0, atol=1e-5, msg=key)


def _points(run_dir: Path, kind: str) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["mse"]) for r in rows if r["split"] == kind]


def test_dist_nproc_writes_one_run_with_the_one_process_result(dist_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    _run(["train.iterations=6"], dist_env, tmp_path, one)
    _run(["train.iterations=6", "dist.nproc=2"], dist_env, tmp_path, two)
    summary = json.loads((two / "summary.json").read_text())
    assert (summary["status"], summary["processes"], summary["steps"]) == ("completed", 2, 6)
    _assert_same_weights(one, two)
    # rank 0 alone wrote the metrics: each point once, equal to the one-process run's
    assert [s for s, _ in _points(two, "val")] == [3, 6]
    for (_, a), (_, b) in zip(_points(one, "val"), _points(two, "val"), strict=True):
        assert b == pytest.approx(a, rel=1e-5)
    assert summary["test"]["mse"] == pytest.approx(
        json.loads((one / "summary.json").read_text())["test"]["mse"], rel=1e-5)
    assert not (tmp_path / "outputs").exists()  # no rank made a directory of its own
    assert list(Path(dist_env["TMPDIR"]).glob("metarun-rank*")) == []  # scratch removed


def test_torchrun_ranks_share_rank_0s_timestamped_directory(dist_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2", "-m", "metarun"]
    done = subprocess.run([*torchrun, *SINE, "train.iterations=3"], env=dist_env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [p.parent for p in (tmp_path / "outputs").glob("*/*/summary.json")]
    assert len(runs) == 1 and len(list((tmp_path / "outputs").glob("*/*"))) == 1
    assert json.loads((runs[0] / "summary.json").read_text())["processes"] == 2
    # one console's worth of log lines: rank 1 logs warnings only
    assert done.stdout.count("test mse") + done.stderr.count("test mse") == 1


def test_a_two_process_run_resumes_exactly_in_two_processes_or_one(
        dist_env: dict[str, str], tmp_path: Path) -> None:
    whole, part = tmp_path / "whole", tmp_path / "part"
    _run(["train.iterations=12"], dist_env, tmp_path, whole)
    _run(["train.iterations=6", "dist.nproc=2"], dist_env, tmp_path, part)
    alone = tmp_path / "alone"
    subprocess.run(["cp", "-r", str(part), str(alone)], check=True)
    _run(["train.iterations=12", "dist.nproc=2"], dist_env, tmp_path, part)
    _run(["train.iterations=12"], dist_env, tmp_path, alone)
    for resumed in (part, alone):
        _assert_same_weights(whole, resumed)
        assert json.loads((resumed / "summary.json").read_text())["resumed_from_step"] == 6


def _rank_pid(mark: str, rank: int) -> int:
    """The pid of this test's process of ``rank`` (found by its environment)."""
    return pid_with_environment(f"METARUN_TEST_MARK={mark}", f"RANK={rank}")


def _start_long(env: dict[str, str], cwd: Path, run_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*metarun_command(), *SINE, "dist.nproc=2",
                             "train.iterations=100000", "train.eval_every=50",
                             "train.checkpoint_every=10", f"hydra.run.dir={run_dir}"],
                            env=env, cwd=cwd, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.parametrize("target", ["rank 1", "launcher"])
def test_sigterm_to_one_rank_or_the_launcher_stops_both_at_one_step(
        target: str, dist_env: dict[str, str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _start_long(dist_env, tmp_path, run_dir)
    _wait_for_checkpoint(run_dir, proc)
    pid = proc.pid if target == "launcher" else _rank_pid(dist_env["METARUN_TEST_MARK"], 1)
    os.kill(pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["resumable"]) == ("preempted", True)
    step = load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]
    assert f"after step {step};" in summary["error"]  # the checkpoint of the step it stopped at


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.parametrize("rank", [1, 0])
def test_a_rank_that_dies_makes_the_run_fail_not_hang(rank: int, dist_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    """Rank 1 killed: rank 0 records the failure. Rank 0 killed (or stopped by the launcher
    before it could write): the launching process records it."""
    run_dir = tmp_path / "run"
    proc = _start_long(dist_env, tmp_path, run_dir)
    _wait_for_checkpoint(run_dir, proc)
    os.kill(_rank_pid(dist_env["METARUN_TEST_MARK"], rank), signal.SIGKILL)
    out, err = proc.communicate(timeout=150)
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]  # an expected failure: lines, not a trace
    assert f"rank {rank}: killed by SIGKILL" in out + err  # the last line says which, and how
    assert "training processes stopped" in out + err
    assert (run_dir / "summary.json").exists(), (out + err)[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    # the launcher's SIGTERM reaches rank 0 while it records the failure: it stays a failure
    assert summary["status"] == "failed" and summary["resumable"], summary


def test_when_every_rank_fails_alike_only_rank_0_and_the_launcher_say_why(
        dist_env: dict[str, str], tmp_path: Path) -> None:
    """Missing data on every rank: all stop before training with the data's exit status (2).
    Rank 0 says why, and the launcher's last line says how each rank ended; rank 1, which met
    the same error, does not repeat it."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    done = metarun(["data=omniglot", "data.download=false", f"data.root={empty}", "device=cpu",
                    "dist.nproc=2", f"hydra.run.dir={tmp_path / 'run'}"], dist_env, tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    printed = done.stdout + done.stderr
    assert printed.count("Omniglot is missing") == 2, printed[-4000:]
    assert "rank 0: exit status 2, rank 1: exit status 2" in printed.splitlines()[-1]
    assert "Traceback" not in printed
