"""Failure and recovery through the ``metarun`` command: real signals, a real SIGKILL, two
processes on one run directory, a sweep with a failing job, and a table of bad inputs."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from metarun.engine.checkpoint import load_checkpoint
from tests.integration.cli import TINY, metarun, metarun_command

# ProtoNet at full width with 4 tasks per step: slow enough (~0.1 s a step) to be interrupted.
# Its tasks' own shape, not the Omniglot recipe's 60-way training episodes.
LONG = ["algo=protonet", "algo.train_ways=null", "algo.train_queries=null", "device=cpu",
        "train.plot=false", "train.iterations=40",
        "train.meta_batch=4",
        "train.eval_every=20", "train.log_every=5", "train.checkpoint_every=2",
        "eval.val_episodes=4", "eval.test_episodes=8", "task.queries=5"]


def _start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*metarun_command(), *args], env=env, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)


def _wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen[str],
                   timeout: float = 120) -> int:
    """Block until ``last.pt`` holds at least ``step``; return its step."""
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if last.exists():
            try:
                found = int(load_checkpoint(last)["step"])
            except (ValueError, FileNotFoundError):  # replaced while we read it
                found = 0
            if found >= step:
                return found
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint of step {step} within {timeout} s")


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["algorithm"]


def test_sigkill_then_resume_gives_the_uninterrupted_weights(env: dict[str, str],
                                                             tmp_path: Path) -> None:
    full = tmp_path / "full"
    assert metarun([*LONG, f"hydra.run.dir={full}"], env, tmp_path).returncode == 0

    cut = tmp_path / "cut"
    proc = _start([*LONG, f"hydra.run.dir={cut}"], env, tmp_path)
    killed_after = _wait_for_step(cut, 6, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (cut / "summary.json").exists()  # the run never claimed to finish

    again = metarun([*LONG, f"hydra.run.dir={cut}"], env, tmp_path)  # same directory
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["resumed_from_step"] >= killed_after
    expected = _final_weights(full)
    for k, v in _final_weights(cut).items():
        assert torch.equal(v, expected[k]), k
    steps = [json.loads(line)["step"] for line in (cut / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == sorted(set(steps))  # no step logged twice

    # Re-running a finished run directory is refused, not silently redone.
    done = metarun([*LONG, f"hydra.run.dir={cut}"], env, tmp_path)
    assert done.returncode == 2 and "already holds a completed run" in done.stdout


def test_sigterm_checkpoints_and_exits_with_its_own_status(env: dict[str, str],
                                                           tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _start([*LONG, f"hydra.run.dir={run_dir}"], env, tmp_path)
    _wait_for_step(run_dir, 2, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out
    assert "SIGTERM" in out and "resume from" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "preempted" and summary["resumable"] is True
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] < 40
    resumed = metarun([*LONG, f"train.resume={run_dir}", f"hydra.run.dir={tmp_path / 'new'}"],
                      env, tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_two_processes_on_one_run_directory(env: dict[str, str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = _start([*LONG, f"hydra.run.dir={run_dir}"], env, tmp_path)
    try:
        _wait_for_step(run_dir, 2, first)
        second = metarun([*LONG, f"hydra.run.dir={run_dir}"], env, tmp_path)
        assert second.returncode == 4
        assert f"another metarun process is using {run_dir}" in second.stdout
        assert first.poll() is None  # the first one runs on undisturbed
    finally:
        first.kill()
        first.communicate()


def test_a_failing_job_does_not_stop_the_sweep(env: dict[str, str], tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = metarun(["-m", "algo=protonet", "task.ways=100000,5", *TINY,
                    f"hydra.sweep.dir={sweep}"], env, tmp_path)
    assert proc.returncode == 1
    assert "1 job(s) of the sweep did not complete" in proc.stderr
    assert "ways = 100000 exceeds" in proc.stderr  # eval.ways: the recipe trains 60-way
    statuses = [json.loads((sweep / str(i) / "summary.json").read_text())["status"]
                for i in (0, 1)]
    assert statuses == ["failed", "completed"]
    finished = (sweep / "1" / "summary.json").read_text()

    again = metarun(["-m", "algo=protonet", "task.ways=100000,5", *TINY,
                     f"hydra.sweep.dir={sweep}"], env, tmp_path)  # the same sweep, re-run
    assert again.returncode == 1 and "job 1 already completed; skipped" in again.stdout
    assert (sweep / "1" / "summary.json").read_text() == finished


def _corrupt_data(tmp_path: Path) -> list[str]:
    root = tmp_path / "corrupt"
    (root / "omniglot").mkdir(parents=True)
    for name in ("images_background.zip", "images_evaluation.zip"):
        (root / "omniglot" / name).write_bytes(b"this is not a zip archive")
    return [f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", "data.download=false"]


# (overrides, text the output must contain in one line). Every case: exit status 2, no
# traceback, no summary that claims success.
BAD_INPUTS = [
    (["task.wayz=3"], "Could not override 'task.wayz'"),
    (["algo=nonexistent"], "unknown option 'algo/nonexistent'; choose one of: anil,"),
    (["bogus=1"], "bogus"),
    (["train.iterations=abc"], "train.iterations must be an integer; got 'abc'"),
    (["train.iterations=0"], "train.iterations must be at least 1"),
    (["train.meta_batch=-1"], "train.meta_batch must be at least 1"),
    (["train.eval_every=0"], "train.eval_every"),
    (["train.checkpoint_every=0"], "train.checkpoint_every"),
    (["optim.lr=0"], "optim.lr must be positive"),
    (["optim.lr=fast"], "optim.lr must be a number"),
    (["task.shots=0"], "task.shots must be at least 1"),
    (["task.queries=zero"], "task.queries must be an integer"),
    (["eval.test_episodes=0"], "eval.test_episodes"),
    (["task.ways=100000"], "task.ways = 100000 exceeds"),
    (["task.shots=15", "task.queries=15"], "exceeds the 20 images per class"),
    (["device=tpu"], "unknown option 'device/tpu'; choose one of: auto, cpu, cuda, mps"),
    (["device.name=tpu"], "device must be one of"),
    (["train.lr_schedule=warmup"], "train.lr_schedule must be one of"),
    (["train.grad_clip=-1"], "train.grad_clip"),
    (["algo.bn_mode=sometimes"], "algo.bn_mode must be one of"),
    (["data=sinusoid", "algo=protonet"], "learns classification tasks only"),
    (["data.split=vinyals"], "data.split must be 'maml' or 'lake'"),
    (["train.resume=/nonexistent/run"], "train.resume = /nonexistent/run"),
    (["data.root=/nonexistent/data", "data.download=false"], "/nonexistent/data"),
    # Every key family, not only the core's: types, finiteness, added and removed keys.
    (["algo.inner_lr=abc"], "algo.inner_lr must be a number; got 'abc'"),
    (["data=sinusoid", "data.amplitude=abc"], "data.amplitude must be a list like"),
    (["+algo.bogus=1"], "algo.bogus is not a setting of metarun.algorithms.maml.MAML"),
    (["~data._target_"], "data._target_ must be set"),
    (["optim.lr=nan"], "optim.lr must be finite"),
    (["-m", "seed=0,1", "train.min_lr=nan"], "train.min_lr must be finite"),
    ("corrupt", "is not a readable zip archive"),
    ("unwritable", "cannot be created: Not a directory"),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_INPUTS,
                         ids=[" ".join(o) if isinstance(o, list) else o for o, _ in BAD_INPUTS])
def test_bad_input_fails_early_in_one_clear_line(overrides: list[str] | str, expected: str,
                                                 env: dict[str, str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    if overrides == "unwritable":  # the run directory would lie inside a file
        (tmp_path / "file").write_text("")
        args, run_dir = [], tmp_path / "file" / "run"
    else:
        args = _corrupt_data(tmp_path) if overrides == "corrupt" else list(overrides)
    device = [] if any(a.startswith("device") for a in args) else ["device=cpu"]
    proc = metarun([*TINY, *args, *device, f"hydra.run.dir={run_dir}"], env, tmp_path,
                   timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    errors = [line for line in output.splitlines() if "ERROR" in line or "error:" in line]
    assert len(errors) == 1 and expected in errors[0], output  # one line says it all
    assert "Traceback" not in output, output
    summary = run_dir / "summary.json"
    assert not summary.exists() or json.loads(summary.read_text())["status"] != "completed"


# The same checks, called as the commands call them before Hydra starts (cheap: no process).
FAMILIES = [
    (["backbone.hidden=abc"], "backbone.hidden must be an integer; got 'abc'"),
    (["data.image_size=abc"], "data.image_size must be an integer; got 'abc'"),
    (["algo.inner_steps=1.5"], "algo.inner_steps must be an integer; got 1.5"),
    (["data=sinusoid", "data.amplitude=[1,abc]"], "data.amplitude[1] must be a number"),
    (["algo.inner_lr=inf"], "algo.inner_lr must be a finite number"),
    (["train.grad_clip=nan"], "train.grad_clip must be a finite number"),
    (["train.min_lr=nan"], "train.min_lr must be finite"),
    (["seed=18446744073709551617"], "seed must be at most 2**63 - 1"),
    (["+backbone.bogus=1"], "backbone.bogus is not a setting of metarun.backbones.conv4.Conv4"),
    (["~algo._target_"], "algo._target_ must be set"),
    (["--cfg", "job", "nosuch.key=1"], "Could not override 'nosuch.key'"),
    (["-m", "seed=0,1", "optim.lr=0.1,nan"],
     "optim.lr must be finite; got nan (sweep job 1: seed=0 optim.lr=nan)"),
]


@pytest.mark.parametrize(("argv", "expected"), FAMILIES, ids=[" ".join(a) for a, _ in FAMILIES])
def test_every_key_family_is_checked_before_hydra_starts(argv: list[str],
                                                         expected: str) -> None:
    from metarun.cli.checks import check_overrides

    problem = check_overrides(argv)
    assert problem is not None and expected in problem and "\n" not in problem


def test_good_command_lines_pass_the_checks() -> None:
    from metarun.cli.checks import check_overrides

    for argv in (["algo=protonet", "optim.lr=0.01", "algo.bn_mode=batch"],
                 ["data=sinusoid", "algo=mamlpp", "data.amplitude=[1,2]"],
                 ["-m", "algo=maml,anil", "seed=0,1"], ["--cfg", "job"],
                 ["-m", "hparams_search=maml", "data=sinusoid"]):
        assert check_overrides(argv) is None, argv
