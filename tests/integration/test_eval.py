"""``metarun-eval``: saved checkpoints meta-tested on the run's own or on other episodes."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest

from metarun.engine import progress
from metarun.jobs.evaluate import evaluate_checkpoint
from metarun.jobs.train import run
from tests.helpers import compose_config
from tests.integration.cli import metarun

SMALL = ["algo=protonet", "backbone.hidden=8", "train.iterations=4", "train.meta_batch=1",
         "train.eval_every=2", "train.log_every=2", "eval.val_episodes=4",
         "eval.test_episodes=10", "task.queries=3"]


def metarun_eval(args: list[str], env: dict[str, str],
                 cwd: Path) -> subprocess.CompletedProcess[str]:
    return metarun(args, env, cwd, name="metarun-eval")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, make_config) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("protonet")
    run(make_config(*SMALL), path)
    return path


def summary(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((path / "summary.json").read_text())


def test_evaluating_a_run_reproduces_its_test_score_exactly(trained: Path,
                                                            tmp_path: Path) -> None:
    own = summary(trained)["test"]
    again = evaluate_checkpoint(trained, tmp_path, device="cpu")
    assert again["result"]["acc"] == own["acc"]
    assert again["result"]["ci95"] == own["ci95"]
    assert again["result"]["episodes_sha256"] == own["episodes_sha256"]
    assert summary(tmp_path) == again
    assert again["checkpoint"] == str(trained / "checkpoints" / "best.pt")


def test_a_5_way_model_is_evaluated_20_way_on_other_episodes(trained: Path,
                                                             tmp_path: Path) -> None:
    s = evaluate_checkpoint(trained, tmp_path, device="cpu",
                            overrides={"eval.ways": 20, "eval.test_episodes": 3, "seed": 7})
    assert s["trained_task"]["ways"] == 5
    assert s["eval_task"]["ways"] == 20 and s["result"]["episodes"] == 3
    assert s["result"]["episodes_sha256"] != summary(trained)["test"]["episodes_sha256"]
    assert 0.0 <= s["result"]["acc"] <= 1.0


def test_evaluating_on_another_split_is_not_called_a_meta_test(
        trained: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "EVAL_LOG_SECONDS", 0.0)  # every episode logs its progress
    with caplog.at_level(logging.INFO, logger="metarun"):
        evaluate_checkpoint(trained, tmp_path, split="val", device="cpu",
                            overrides={"eval.val_episodes": 2})
    lines = [r.getMessage() for r in caplog.records if "1/2 episodes" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("evaluation on val: 1/2 episodes")


def test_the_command_line_reproduces_the_run_and_reaches_ensembles(
        trained: Path, tmp_path: Path, env: dict[str, str]) -> None:
    proc = metarun_eval([f"checkpoint={trained}", "device=cpu",
                         f"hydra.run.dir={tmp_path / 'one'}"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert summary(tmp_path / "one")["result"]["acc"] == summary(trained)["test"]["acc"]
    assert (tmp_path / "one" / "metarun-eval.log").is_file()
    # A data key of the run's own dataset, another split, and an ensemble of the run with
    # itself (whose average is the run).
    proc = metarun_eval([f"checkpoint=[{trained},{trained}]", "ensemble=average", "split=val",
                         "data.rotations=false", "eval.val_episodes=4", "device=cpu",
                         f"hydra.run.dir={tmp_path / 'ens'}"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ens = summary(tmp_path / "ens")
    assert ens["split"] == "val" and ens["ensemble"]["test"]["episodes"] == 4
    # The average of a model with itself is the model: the same likelihood, to rounding. The
    # accuracies are not compared: this 4-step model's class scores are equal to about 1e-7
    # (its loss is ln 5), so float rounding decides its near-ties, and the ensemble's
    # softmax-mean-log path broke 5 of 300 of them differently from the member's raw logits.
    assert ens["ensemble"]["test"]["loss"] == pytest.approx(ens["members"][0]["test"]["loss"],
                                                            rel=1e-6)


@pytest.mark.parametrize("args, message", [
    ([], "say which model to evaluate"),
    (["checkpoint={run}", "data.nonsense=1"], "has no such key"),
    (["checkpoint=[{run},{run}]"], "choose how to combine them"),
    (["checkpoint={run}", "split=holdout"], "split must be one of"),
    (["checkpoint={run}", "eval.ways=100000"], "eval.ways = 100000 exceeds the 1692 classes"),
    (["checkpoint={run}", "eval.wayz=3"], "eval.wayz"),
    (["checkpoint={run}", "seed=-5"], "seed must be an integer from 0 to 2**63 - 1"),
    (["checkpoint={run}", "eval.episodes=4"], "eval.episodes is now eval.test_episodes"),
    (["checkpoint={tmp}/nowhere.pt"], "no checkpoint at "),
    (["checkpoint={run}", "algo.test_inner_steps=10"], "ProtoNet) has no such key; its keys"),
    (["checkpoint=[{run},{run}]", "ensemble=average", "algo.nonsense=1"], "has no such key"),
    (["checkpoint={run}", "algo._target_=os.system"], "algo._target_ cannot be changed"),
    (["checkpoint={run}", "algo.bn_mode={{_target_:os.system}}"],
     "is not a component metarun ships"),
])
def test_bad_input_is_one_line_and_exit_2(trained: Path, tmp_path: Path, env: dict[str, str],
                                          args: list[str], message: str) -> None:
    proc = metarun_eval([a.format(run=trained, tmp=tmp_path) for a in args] +
                        ["device=cpu", f"hydra.run.dir={tmp_path}"], env, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines()
             if "error" in ln.lower() and "HYDRA_FULL_ERROR" not in ln]
    assert len(lines) == 1 and message in lines[0], proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_regression_checkpoints_reproduce_their_mse_and_take_algo_keys(tmp_path: Path) -> None:
    cfg = compose_config("device=cpu", "data=sinusoid", "algo=maml", "train.iterations=4",
                         "train.eval_every=2", "eval.val_episodes=4", "eval.test_episodes=8")
    result = run(cfg, tmp_path / "run")
    own = result.summary["test"]["mse"]
    again = evaluate_checkpoint(tmp_path / "run", tmp_path / "eval", device="cpu")
    assert again["metric"] == "mse"
    assert again["result"]["mse"] == own
    # algo keys rebuild the model before its weights are loaded: the run's own meta-test
    # steps give its score again; none (the unadapted model) a worse one, on the same episodes.
    steps = {"algo.test_inner_steps": cfg.algo.test_inner_steps}
    assert evaluate_checkpoint(tmp_path / "run", tmp_path / "same", device="cpu",
                               overrides=steps)["result"]["mse"] == own
    unadapted = evaluate_checkpoint(tmp_path / "run", tmp_path / "none", device="cpu",
                                    overrides={"algo.test_inner_steps": 0})
    assert unadapted["overrides"] == {"algo.test_inner_steps": 0}
    assert unadapted["result"]["episodes_sha256"] == again["result"]["episodes_sha256"]
    assert unadapted["result"]["mse"] > own


def test_an_algo_key_that_changes_the_weights_shapes_is_refused(tmp_path: Path,
                                                                 make_config) -> None:  # type: ignore[no-untyped-def]
    small = [a for a in SMALL if not a.startswith("algo=")]
    run(make_config(*small, "algo=maml", "train.iterations=2"), tmp_path / "maml")
    with pytest.raises(ValueError, match=r"the saved weights do not fit the model its config "
                                         r"describes \(size mismatch for net\..*\)$"):
        evaluate_checkpoint(tmp_path / "maml", tmp_path / "eval", device="cpu",
                            overrides={"algo.ways": 3, "eval.ways": 3})
    assert not (tmp_path / "eval" / "summary.json").exists()


def test_an_evaluation_sweep_goes_on_past_a_failed_setting(trained: Path, tmp_path: Path,
                                                           env: dict[str, str]) -> None:
    proc = metarun_eval(["-m", f"checkpoint={trained}", "eval.ways=100000,20",
                         "eval.test_episodes=2", "device=cpu", f"hydra.sweep.dir={tmp_path}"],
                        env, tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "metarun-eval: 1 job(s) of the sweep did not complete" in proc.stderr
    assert summary(tmp_path / "0")["status"] == "failed"
    assert summary(tmp_path / "1")["eval_task"]["ways"] == 20
    assert summary(tmp_path / "1")["result"]["episodes"] == 2  # metarun's own key
