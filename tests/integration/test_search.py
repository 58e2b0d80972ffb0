"""metarun's Optuna sweeper (hydra/sweeper=optuna) with the real libraries: searches that are
stored, killed and continued, pruned, run in parallel, multi-objective, and read by
optuna-dashboard."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from metarun.summary import read_summary
from tests.helpers import assert_png
from tests.integration.cli import command, metarun

optuna = pytest.importorskip("optuna")  # the sweep extra
from optuna.trial import TrialState  # noqa: E402

from metarun.studies import open_storage  # noqa: E402

SINE = ["data=sinusoid", "device=cpu", "train.iterations=4", "train.eval_every=2",
        "train.log_every=2", "eval.val_episodes=4", "eval.test_episodes=4", "train.plot=false"]
#: long enough that a trial can be caught running, with checkpoints every 10 steps, and a
#: space in which no trial diverges
SINE_LONGER = [*SINE, "train.iterations=100", "train.eval_every=10", "train.log_every=10",
               "algo.inner_lr=tag(log, interval(0.01, 0.1))", "algo.inner_steps=range(1, 3)"]


def search(tmp_path: Path, *args: str) -> list[str]:
    return ["-m", "hparams_search=maml", f"hydra.sweep.dir={tmp_path / 'sweep'}", *args]


def study_of(storage: str, name: str = "maml") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def test_an_optuna_search_minimises_regression_mse_in_a_journal(tmp_path: Path,
                                                                env: dict[str, str]) -> None:
    proc = metarun(search(tmp_path, "hydra.sweeper.n_trials=2", *SINE), env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    jobs = [read_summary(sweep / str(n)) for n in range(2)]
    assert all(j is not None and j["status"] == "completed" for j in jobs)
    for n in range(2):  # every trial drew all three hyperparameters
        keys = {o.split("=")[0] for o in yaml.safe_load(
            (sweep / str(n) / ".hydra" / "overrides.yaml").read_text())}
        assert {"algo.inner_lr", "algo.inner_steps", "optim.lr"} <= keys
    # no storage named: the study is the journal in the sweep directory
    study = study_of(str(sweep / "optuna.journal"))
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    values = [j["val"]["best_mse"] for j in jobs if j]
    assert [t.value for t in study.trials] == pytest.approx(values)
    # every validation was reported to the trial (steps 2 and 4)
    assert all(sorted(t.intermediate_values) == [2, 4] for t in study.trials)
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(min(values))
    assert result["trials"] == {"complete": 2, "pruned": 0, "fail": 0}
    assert result["best_run_dir"] == str(sweep / str(result["best_trial"]))
    assert (sweep / "report.md").is_file()
    # the study's report, beside the sweep's: every trial, the best one, Optuna's plots
    with open(sweep / "study_trials.csv", newline="") as f:
        trials = list(csv.DictReader(f))
    assert [float(t["score"]) for t in trials] == pytest.approx(values)
    assert f"| {result['best_trial']} | complete |" in (sweep / "study.md").read_text()
    for plot in ("history", "slice"):
        assert_png(sweep / f"study_{plot}.png")
    # and metarun-report reads the study from its storage alone
    report = subprocess.run([*command("metarun-report"), "--study", str(sweep / "optuna.journal"),
                             "--out", str(tmp_path / "r")], env=env, capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert f"best: trial {result['best_trial']}" in report.stdout
    assert (tmp_path / "r" / "study.md").is_file()


def _wait_for(condition: Any, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the search ended first"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_search_killed_after_two_trials_goes_on_when_run_again(tmp_path: Path,
                                                                 env: dict[str, str]) -> None:
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    args = search(tmp_path, "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage={storage}",
                  *SINE_LONGER)
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen([*command(), *args], env=env, cwd=tmp_path, text=True,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    third = tmp_path / "sweep" / "2"

    def the_third_checkpointed_and_running() -> bool:  # trials run one after another
        return (third / "checkpoints" / "last.pt").exists() and \
            not (third / "summary.json").exists()

    try:
        _wait_for(the_third_checkpointed_and_running, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {t.number: t for t in study_of(storage).trials}
    assert before[2].state == TrialState.RUNNING and len(before) == 3

    again = metarun(args, env, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trial 2 was left running by a process that is gone" in again.stdout + again.stderr
    trials = study_of(storage).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4
    for n in (0, 1):  # finished trials were kept as they were
        assert trials[n].datetime_complete == before[n].datetime_complete
        assert trials[n].value == before[n].value
    assert trials[2].params == before[2].params
    resumed = read_summary(third)
    assert resumed is not None and resumed["status"] == "completed"
    assert resumed["resumed_from_step"] >= 10  # it went on from its checkpoint
    assert trials[2].value == pytest.approx(resumed["val"]["best_mse"])
    for t in trials:
        assert t.user_attrs["run_dir"] == str(tmp_path / "sweep" / str(t.number))
    # the same command once more: nothing left to do, nothing counted twice
    third_run = metarun(args, env, tmp_path)
    assert third_run.returncode == 0 and len(study_of(storage).trials) == 4


@pytest.mark.parametrize("pruner, lrs", [
    (["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1"], [0.01, 1e-9]),
    (["hydra/sweeper/pruner=successive_halving", "hydra.sweeper.pruner.min_resource=10"],
     [0.01, 1e-9]),
    # two brackets: trials 0 and 2 share the one that cuts at step 10 (by Optuna's hash of
    # the study name and trial number); trial 1 is alone in the other and runs to the end
    (["hydra/sweeper/pruner=hyperband", "hydra.sweeper.pruner.min_resource=10",
      "hydra.sweeper.pruner.max_resource=30"], [0.01, 0.01, 1e-9]),
    # data-parallel trials: rank 0 reports, and both processes stop at the pruned step
    (["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1",
      "dist.nproc=2", "train.meta_batch=4"], [0.01, 1e-9]),
], ids=["median", "successive_halving", "hyperband", "median, 2 processes"])
def test_a_pruner_prunes_a_trial_that_cannot_learn(tmp_path: Path, env: dict[str, str],
                                                   pruner: list[str], lrs: list[float]) -> None:
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    study = optuna.create_study(study_name="maml", storage=open_storage(storage))
    # trials that differ only in the meta learning rate: the last cannot move the weights
    # (its validations stay those of the initial model); the others learn
    for lr in lrs:
        study.enqueue_trial({"optim.lr": lr, "algo.inner_lr": 0.01, "algo.inner_steps": 1})
    proc = metarun(search(tmp_path, f"hydra.sweeper.n_trials={len(lrs)}",
                          f"hydra.sweeper.storage={storage}", *pruner,
                          "optim.lr=tag(log, interval(1e-9, 0.1))", *SINE,
                          "train.iterations=30", "train.eval_every=10",
                          # the same 50 episodes for every trial: the learners' validations
                          # are then below the initial model's at every step
                          "eval.val_episodes=50"), env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = study_of(storage).trials
    last = str(len(lrs) - 1)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * (len(lrs) - 1) + [
        TrialState.PRUNED]
    assert sorted(trials[0].intermediate_values) == [10, 20, 30]  # every validation reported
    assert sorted(trials[-1].intermediate_values) == [10]
    pruned = read_summary(tmp_path / "sweep" / last)
    assert pruned is not None and pruned["status"] == "pruned"
    # each cuts at its first rung, the first validation (the median: no warm-up steps)
    assert "pruned by the search after the validation of step 10" in pruned["error"]
    with (tmp_path / "sweep" / "report.csv").open() as f:
        assert [(r["run"], r["status"]) for r in csv.DictReader(f)] == [
            (str(i), "completed") for i in range(len(lrs) - 1)] + [(last, "pruned")]
    assert "did not complete" not in proc.stderr  # a pruned trial is not a failure


def test_a_joblib_search_with_two_workers_shares_one_storage(tmp_path: Path,
                                                             env: dict[str, str]) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    proc = metarun(search(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                          "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2",
                          f"hydra.sweeper.storage={storage}", *SINE), env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = study_of(storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    # each worker process opened the storage itself: it reported its validations there
    assert all(sorted(t.intermediate_values) == [2, 4] for t in trials)
    for t in trials:
        summary = read_summary(Path(t.user_attrs["run_dir"]))
        assert summary is not None and summary["threads"] == max(1, (os.cpu_count() or 1) // 2)


def _dashboard_get(storage: str, path: str) -> dict[str, Any]:
    import optuna_dashboard

    app = optuna_dashboard.wsgi(open_storage(storage))
    status: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "",
               "SERVER_NAME": "localhost", "SERVER_PORT": "8080", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr}
    body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
    assert status == ["200 OK"], body[:500]
    return json.loads(body)  # type: ignore[no-any-return]


def test_a_two_objective_search_opens_in_optuna_dashboard(tmp_path: Path,
                                                          env: dict[str, str]) -> None:
    pytest.importorskip("optuna_dashboard")
    journal = str(tmp_path / "search.journal")
    proc = metarun(search(tmp_path, "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={journal}",
                          "hydra.sweeper.objectives=[score,seconds]", *SINE), env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary,) = _dashboard_get(journal, "/api/studies")["study_summaries"]
    assert summary["study_name"] == "maml" and summary["directions"] == ["minimize"] * 2
    detail = _dashboard_get(journal, f"/api/studies/{summary['study_id']}")
    assert [t["state"] for t in detail["trials"]] == ["Complete"] * 2
    for t in detail["trials"]:  # the values are the run's best validation MSE and seconds
        run = read_summary(tmp_path / "sweep" / str(t["number"]))
        assert run is not None
        assert t["values"] == pytest.approx([run["val"]["best_mse"], run["seconds"]])
    result = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert 1 <= len(result["solutions"]) <= 2


@pytest.mark.parametrize("args, message", [
    (["hydra.sweeper.objectives=[score,seconds]", "hydra/sweeper/pruner=median"],
     "Optuna prunes single-objective studies only"),
    (["hydra.sweeper.objectives=[accuracy]"], "hydra.sweeper.objectives = ['accuracy']"),
    (["hydra/sweeper/sampler=grid"],
     "algo.inner_lr: hydra/sweeper/sampler=grid needs a choice or a range"),
    # the space is checked before a trial runs: each choice, each end of a range
    (["algo.inner_lrr=interval(0.1, 0.2)"], "Could not override 'algo.inner_lrr'"),
    (["algo.inner_steps=choice(1, abc)"], "algo.inner_steps must be an integer; got 'abc' "
                                          "(the search space at algo.inner_steps=abc"),
    # only the key the message names, not the other keys of the composed point
    (["optim.lr=range(-1, 1)"], "optim.lr must be positive; got -1 (the search space at "
                                "optim.lr=-1)"),
    # the ready space's keys too: MAML's space over ProtoNet
    (["algo=protonet"], "Could not override 'algo.inner_lr'"),
])
def test_a_search_that_cannot_start_is_one_line_and_status_2(
        tmp_path: Path, env: dict[str, str], args: list[str], message: str) -> None:
    proc = metarun(search(tmp_path, *args, *SINE), env, tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"metarun: error: {message}")


def test_a_grid_search_runs_each_point_once(tmp_path: Path, env: dict[str, str]) -> None:
    proc = metarun(search(tmp_path, "hydra/sweeper/sampler=grid", "algo.inner_lr=choice(0.1)",
                          "optim.lr=0.001", "algo.inner_steps=range(1, 3)", *SINE),
                   env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = study_of(str(tmp_path / "sweep" / "optuna.journal")).trials
    # n_trials (20) is cut to the grid's 2 points; optim.lr is fixed, not searched
    assert sorted(t.params["algo.inner_steps"] for t in trials) == [1, 2]
    assert all(set(t.params) == {"algo.inner_lr", "algo.inner_steps"} for t in trials)


def test_another_search_on_a_stored_study_is_refused(tmp_path: Path,
                                                     env: dict[str, str]) -> None:
    storage = f"hydra.sweeper.storage=sqlite:///{tmp_path / 'search.db'}"
    first = metarun(search(tmp_path, "hydra.sweeper.n_trials=1", storage, *SINE), env, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    other = metarun(search(tmp_path, "hydra.sweeper.n_trials=2", storage, *SINE,
                           "task.shots=5"), env, tmp_path)
    assert other.returncode == 2
    assert "the study maml in sqlite:///" in other.stderr
    assert "was started by another search (its overrides differ" in other.stderr
