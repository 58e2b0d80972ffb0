"""The ``metarun`` command end to end, on real Omniglot, as a user (or a CI script) runs it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from metarun.configs import config_dir
from tests.integration.cli import TINY, metarun

RESULT_LINE = re.compile(r"test acc (\d+\.\d+)% ± (\d+\.\d+)% \(95% CI, (\d+) episodes")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]):  # type: ignore[no-untyped-def]
    cwd = tmp_path_factory.mktemp("cwd")
    run_dir = cwd / "run"
    proc = metarun(["algo=maml", "data=omniglot", "device=cpu", *TINY,
                    f"hydra.run.dir={run_dir}"], env, cwd)
    return proc, run_dir


def test_exit_status_and_last_line(tiny_run) -> None:  # type: ignore[no-untyped-def]
    proc, _ = tiny_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    match = RESULT_LINE.search(last)
    assert match, last
    assert int(match.group(3)) == 8
    assert 0 <= float(match.group(1)) <= 100


def test_run_directory_contents(tiny_run) -> None:  # type: ignore[no-untyped-def]
    _, run_dir = tiny_run
    for name in [".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.jsonl",
                 "summary.json", "checkpoints/best.pt", "checkpoints/last.pt", "metarun.log"]:
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.rglob("*.tmp"))


def test_summary_values(tiny_run) -> None:  # type: ignore[no-untyped-def]
    _, run_dir = tiny_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert 0.0 <= summary["test"]["acc"] <= 1.0
    assert 0.0 <= summary["test"]["ci95"] < 0.5
    assert summary["test"]["episodes"] == 8
    assert 0.0 <= summary["val"]["best_acc"] <= 1.0
    assert summary["best_step"] in (2, 4)
    assert summary["seconds"] > 0
    assert summary["device"] == "cpu"
    assert summary["bn_mode"] == "batch"
    assert len(summary["test"]["episodes_sha256"]) == 64


def test_metrics_lines(tiny_run) -> None:  # type: ignore[no-untyped-def]
    _, run_dir = tiny_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [
        (2, "train"), (2, "val"), (4, "train"), (4, "val"), (records[-1]["step"], "test")]
    for r in records:
        assert {"step", "split", "loss", "acc", "seconds"} <= set(r)
        assert 0.0 <= r["acc"] <= 1.0


def test_checkpoints_are_plain_data(tiny_run) -> None:  # type: ignore[no-untyped-def]
    _, run_dir = tiny_run
    blob = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert blob["config"]["algo"]["_target_"] == "metarun.algorithms.maml.MAML"
    assert blob["metarun_version"]
    assert blob["step"] == json.loads((run_dir / "summary.json").read_text())["best_step"]


def test_a_typo_is_refused_before_torch_is_imported(env: dict[str, str],
                                                    tmp_path: Path) -> None:
    """The command line is checked before anything heavy is loaded: a bad value or option is
    answered in well under a second, not after torch's 2-3 seconds of import."""
    import subprocess
    import sys

    probe = ("import sys\n"
             "from metarun.cli.train import main\n"
             "sys.argv = ['metarun', *sys.argv[1:]]\n"
             "try:\n    main()\n"
             "except SystemExit as e:\n"
             "    print('exit', e.code, 'torch' in sys.modules)\n")
    for bad in (["train.meta_batch=-1"], ["algo=no_such_algorithm"], ["task.ways=abc"]):
        proc = subprocess.run([sys.executable, "-c", probe, *bad, "device=cpu"], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.stdout.split()[-3:] == ["exit", "2", "False"], proc.stdout + proc.stderr
        assert "error:" in proc.stderr + proc.stdout


def test_help_lists_the_groups(env: dict[str, str], tmp_path: Path) -> None:
    proc = metarun(["--help"], env, tmp_path)
    assert proc.returncode == 0
    conf = Path(config_dir())
    for group in ["algo", "data", "task", "backbone", "optim", "device", "train", "eval",
                  "experiment"]:
        options = ", ".join(sorted(f.stem for f in (conf / group).glob("*.yaml")))
        assert f"{group}: {options}" in proc.stdout
    assert "device: auto, cpu, cuda, mps" in proc.stdout


def test_cfg_job_prints_the_config(env: dict[str, str], tmp_path: Path) -> None:
    proc = metarun(["--cfg", "job", "algo=protonet", "task.shots=5"], env, tmp_path)
    assert proc.returncode == 0
    assert "_target_: metarun.algorithms.protonet.ProtoNet" in proc.stdout
    assert "shots: 5" in proc.stdout
    assert not (tmp_path / "outputs").exists()  # printing the config runs nothing


def test_cuda_without_cuda_fails_clearly(env: dict[str, str], tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for device in ("device=cuda", "device=cuda:1"):
        proc = metarun([device, *TINY], env, tmp_path)
        assert proc.returncode == 2  # a bad input: one line, no traceback
        assert "CUDA is not available" in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        assert not list((tmp_path / "outputs").rglob("summary.json"))


def test_multirun_jobs_follow_the_contract(env: dict[str, str], tmp_path: Path,
                                           tiny_run) -> None:  # type: ignore[no-untyped-def]
    sweep = tmp_path / "sweep"
    proc = metarun(["-m", "algo=protonet", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}"],
                   env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summaries = [json.loads((sweep / str(i) / "summary.json").read_text()) for i in (0, 1)]
    assert [s["seed"] for s in summaries] == [0, 1]
    assert summaries[0]["test"]["episodes_sha256"] != summaries[1]["test"]["episodes_sha256"]
    # Same seed and task: ProtoNet is tested on exactly the episodes MAML was tested on.
    maml = json.loads((tiny_run[1] / "summary.json").read_text())
    assert maml["algo"] == "MAML" and summaries[0]["algo"] == "ProtoNet"
    assert summaries[0]["test"]["episodes_sha256"] == maml["test"]["episodes_sha256"]


def test_a_benchmark_that_is_not_there_is_one_line_and_exit_2(env: dict[str, str],
                                                               tmp_path: Path) -> None:
    empty = tmp_path / "data"
    empty.mkdir()
    proc = metarun(["data=mini_imagenet", f"data.root={empty}", "device=cpu", *TINY], env,
                   tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "mini-imagenet-cache-train.pkl" in errors[0]
    assert "images/ folder" in errors[0] and str(empty / "mini-imagenet") in errors[0]
    assert list(empty.iterdir()) == []  # nothing written where the data belongs
