"""Optional sweep features: the joblib launcher, TensorBoard logging, and the messages when
their packages are missing (the Optuna search: test_search.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metarun import extras
from metarun.cli.common import check_extras
from metarun.cli.sweep import direction
from metarun.jobs.train import run
from tests.helpers import compose_config
from tests.integration.cli import metarun

SINE = ["data=sinusoid", "device=cpu", "train.iterations=4", "train.eval_every=2",
        "train.log_every=2", "eval.val_episodes=4", "eval.test_episodes=4", "train.plot=false"]


def job_summaries(root: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(p.read_text()) for p in sorted(root.glob("*/summary.json"))]


def test_the_search_direction_follows_the_task_type() -> None:
    assert direction("metarun.data.omniglot.Omniglot") == "maximize"
    assert direction("metarun.data.sinusoid.Sinusoid") == "minimize"


def test_joblib_runs_jobs_in_parallel_processes_and_still_reports_failures(
        tmp_path: Path, env: dict[str, str]) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    proc = metarun(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                    "algo=maml,protonet", *SINE, f"hydra.sweep.dir={tmp_path}"], env, tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    jobs = job_summaries(tmp_path)
    assert [j["status"] for j in jobs] == ["completed", "failed"]
    assert "1 job(s) of the sweep did not complete" in proc.stderr
    # two jobs at once: each took its share of the cores, not all of them
    assert jobs[0]["threads"] == max(1, (os.cpu_count() or 1) // 2)


def test_tensorboard_gets_the_same_scalars_as_metrics_jsonl(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(compose_config(*SINE, "logger=tensorboard"), tmp_path)
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for split in ("train", "val", "test"):
        expected = [(r["step"], r["mse"]) for r in records if r["split"] == split]
        got = [(e.step, e.value) for e in acc.Scalars(f"{split}/mse")]
        assert [s for s, _ in got] == [s for s, _ in expected]
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert "train/lr" in acc.Tags()["scalars"]


@pytest.mark.parametrize("argv, extra", [
    (["-m", "hparams_search=maml"], "sweep"),
    (["-m", "hydra/launcher=joblib", "seed=0,1"], "joblib"),
    (["-m", "hydra/launcher=submitit_slurm"], "slurm"),
    (["logger=tensorboard"], "tensorboard"),
    (["logger=mlflow"], "mlflow"),
    (["logger=[csv,wandb]"], "wandb"),  # several loggers at once
])
def test_a_missing_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                              extra: str) -> None:
    monkeypatch.setattr(extras.importlib.util, "find_spec", lambda name: None)
    message = check_extras(argv)
    assert message is not None and f"pip install 'metarun[{extra}]'" in message


def test_a_search_needs_multirun(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("optuna")  # the sweep extra
    message = check_extras(["hparams_search=maml"])
    assert message is not None and "add -m" in message
    assert check_extras(["-m", "hparams_search=maml"]) is None
    assert check_extras(["hparams_search=null"]) is None
    # the processes dist.nproc starts for a search's trial get the trial's overrides
    monkeypatch.setenv(extras.JOB_RANK_ENV, "1")
    assert check_extras(["hparams_search=maml"]) is None


def test_missing_extra_exits_2_in_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    # metarun's own entry point in a process where the Optuna plugin cannot be found.
    hide = ("import importlib.util as u, sys; real = u.find_spec; "
            "u.find_spec = lambda name, *a: None if 'optuna' in name else real(name, *a); "
            "sys.argv = ['metarun', '-m', 'hparams_search=protonet']; "
            "from metarun.cli.train import main; main()")
    proc = subprocess.run([sys.executable, "-c", hide], env=env, cwd=tmp_path, text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "metarun: error: hparams_search (metarun's Optuna sweeper) needs the optional package "
        "optuna: pip install 'metarun[sweep]'"]


def test_hydras_old_optuna_sweeper_beside_metaruns_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("optuna")
    real = extras.importlib.util.find_spec
    monkeypatch.setattr(extras.importlib.util, "find_spec", lambda name: object()
                        if name == extras.OLD_OPTUNA_SWEEPER else real(name))
    message = check_extras(["-m", "hparams_search=maml"])
    assert message is not None and "pip uninstall hydra-optuna-sweeper" in message
