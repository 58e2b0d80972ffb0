"""Ensembles of finished runs (``metarun.ensemble`` and ``metarun-ensemble``) on small real
Omniglot runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from metarun.jobs.ensemble import ensemble, fused_state, load_members
from metarun.jobs.train import run
from tests.integration.cli import metarun

SMALL = ["algo=protonet", "backbone.hidden=8", "train.iterations=4", "train.meta_batch=1",
         "train.eval_every=2", "train.log_every=2", "eval.val_episodes=4",
         "eval.test_episodes=10", "task.queries=3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, make_config) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """Two ProtoNets (seeds 0 and 1) and one with a different backbone width."""
    out = {}
    for name, extra in (("a", ["seed=0"]), ("b", ["seed=1"]), ("wide", ["backbone.hidden=12"])):
        path = tmp_path_factory.mktemp(name)
        run(make_config(*SMALL, *extra), path)
        out[name] = path
    return out


def test_fusing_a_checkpoint_with_itself_gives_it_back(runs: dict[str, Path],
                                                       tmp_path: Path) -> None:
    (member,) = load_members([runs["a"]], device="cpu")
    fused = fused_state([member.state, member.state])
    assert all(torch.equal(fused[k], v) for k, v in member.state.items())
    summary = ensemble([runs["a"], runs["a"]], "fuse", tmp_path, device="cpu")
    assert summary["ensemble"]["test"] == summary["members"][0]["test"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_averaging_does_not_depend_on_member_order(runs: dict[str, Path],
                                                   tmp_path: Path) -> None:
    ab = ensemble([runs["a"], runs["b"]], "average", tmp_path / "ab", device="cpu")
    ba = ensemble([runs["b"], runs["a"]], "average", tmp_path / "ba", device="cpu")
    assert ab["ensemble"]["test"]["acc"] == ba["ensemble"]["test"]["acc"]
    assert ab["ensemble"]["test"]["loss"] == pytest.approx(ba["ensemble"]["test"]["loss"],
                                                           rel=1e-6)
    assert [m["test"] for m in ab["members"]] == [m["test"] for m in reversed(ba["members"])]
    # Every member is scored on the same episodes as the ensemble (the first member's).
    assert ab["episodes_sha256"] != ""
    single = ensemble([runs["a"]], "average", tmp_path / "a", device="cpu")
    assert single["ensemble"]["test"]["acc"] == single["members"][0]["test"]["acc"]


def test_selection_takes_the_best_validation_score(runs: dict[str, Path],
                                                   tmp_path: Path) -> None:
    summary = ensemble([runs["a"], runs["b"]], "select", tmp_path, device="cpu")
    vals = [m["val_best_acc"] for m in summary["members"]]
    best = summary["members"][vals.index(max(vals))]
    assert summary["ensemble"]["selected"] == best["checkpoint"]
    assert summary["ensemble"]["test"] == best["test"]


def test_fusion_refuses_different_architectures(runs: dict[str, Path], tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="metarun")
    ensemble([runs["a"], runs["b"]], "fuse", tmp_path / "ab", device="cpu")
    assert "different seeds" in caplog.text
    with pytest.raises(ValueError, match="fuse needs one architecture"):
        ensemble([runs["a"], runs["wide"]], "fuse", tmp_path, device="cpu")
    # Averaging predictions has no such limit.
    summary = ensemble([runs["a"], runs["wide"]], "average", tmp_path, device="cpu",
                       overrides={"eval.test_episodes": 4, "eval.ways": 3})
    assert summary["ensemble"]["test"]["episodes"] == 4
    assert summary["eval_task"]["ways"] == 3


def _ensemble_cli(args: list[str], env: dict[str, str],
                  cwd: Path) -> subprocess.CompletedProcess[str]:
    return metarun(args, env, cwd, name="metarun-ensemble")


def test_command_line(runs: dict[str, Path], env: dict[str, str], tmp_path: Path) -> None:
    proc = _ensemble_cli(["average", str(runs["a"]), str(runs["b"] / "checkpoints/best.pt"),
                          "device=cpu", "eval.test_episodes=5", "hydra.run.dir=ens"], env,
                         tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ensemble (average)" in proc.stdout and "(seed 0)" in proc.stdout
    summary = json.loads((tmp_path / "ens" / "summary.json").read_text())
    assert len(summary["members"]) == 2 and summary["ensemble"]["test"]["episodes"] == 5

    missing = _ensemble_cli(["select", str(tmp_path / "nowhere.pt")], env, tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"metarun-ensemble: error: no checkpoint at {tmp_path / 'nowhere.pt'}"]
    bad = _ensemble_cli(["vote", str(runs["a"])], env, tmp_path)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    # The options of earlier versions name the key that replaced them.
    old = _ensemble_cli(["average", str(runs["a"]), "--ways", "3"], env, tmp_path)
    assert old.returncode == 2
    assert "metarun-ensemble: error: --ways is now eval.ways=N" in old.stderr


def test_metarun_ensemble_is_metarun_eval(runs: dict[str, Path], env: dict[str, str],
                                          tmp_path: Path) -> None:
    """The two spellings of an ensemble evaluation write the same summary."""
    common = ["device=cpu", "eval.test_episodes=3", "eval.ways=3"]
    alias = _ensemble_cli(["select", str(runs["a"]), str(runs["b"]), *common,
                           f"hydra.run.dir={tmp_path / 'alias'}"], env, tmp_path)
    direct = metarun([f"checkpoint=[{runs['a']},{runs['b']}]", "ensemble=select", *common,
                      f"hydra.run.dir={tmp_path / 'direct'}"], env, tmp_path,
                     name="metarun-eval")
    assert alias.returncode == 0 and direct.returncode == 0, alias.stderr + direct.stderr
    one, two = (json.loads((tmp_path / d / "summary.json").read_text())
                for d in ("alias", "direct"))
    for s in (one, two):
        s.pop("seconds")
    assert one == two and one["command"] == "metarun-eval" and one["status"] == "completed"
