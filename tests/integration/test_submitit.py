"""SLURM through Hydra's submitit launcher, tested with ``submitit_local``: a job preempted by
the scheduler's signal (SIGUSR2) checkpoints at the step boundary, is requeued by submitit,
and resumes to the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import torch

from metarun.engine.checkpoint import load_checkpoint
from tests.integration.cli import metarun, metarun_command, pid_with_environment

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

RUN = ["data=sinusoid", "device=cpu", "train.iterations=1500", "train.eval_every=500",
       "train.checkpoint_every=25", "train.log_every=100", "eval.val_episodes=8",
       "eval.test_episodes=8", "train.plot=false"]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_preempted_submitit_job_is_requeued_and_resumes_exactly(env: dict[str, str],
                                                                  tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    done = metarun([*RUN, f"hydra.run.dir={whole}"], env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    mark = uuid.uuid4().hex
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([*metarun_command(), "-m", "hydra/launcher=submitit_local", *RUN,
                             f"hydra.sweep.dir={sweep}"], env={**env, "METARUN_TEST_MARK": mark},
                            cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    pid = pid_with_environment(f"METARUN_TEST_MARK={mark}", "SUBMITIT_LOCAL_GLOBALID=0",
                               timeout=120)  # the submitit task
    last = sweep / "0" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists():  # training has started
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.kill(pid, signal.SIGUSR2)  # what SLURM sends before preempting or timing out a job
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]

    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 1500
    assert 0 < summary["resumed_from_step"] < 1500  # it was stopped, and went on from there
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "handing the job back to its scheduler" in logs and "Requeued job" in logs
    a = load_checkpoint(whole / "checkpoints" / "last.pt")["algorithm"]
    b = load_checkpoint(last)["algorithm"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)
