"""A crafted checkpoint never runs code: every payload, through the API, metarun-eval,
metarun-ensemble and train.resume, is refused in one line (status 2) and its marker file is
never created."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import metarun
from metarun.engine.checkpoint import load_checkpoint, save_checkpoint
from metarun.jobs.ensemble import ensemble
from metarun.jobs.evaluate import evaluate_checkpoint
from metarun.jobs.train import run
from tests.helpers import compose_config
from tests.integration.cli import metarun as run_command

SINE = ["device=cpu", "data=sinusoid", "train.iterations=2", "train.eval_every=2",
        "train.log_every=1", "eval.val_episodes=2", "eval.test_episodes=2"]


class _Touch:
    """Unpickling this runs ``touch <marker>``: what a hostile pickle does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sine")
    run(compose_config(*SINE), out)
    return out


def _payloads(tmp: Path, marker: Path) -> dict[str, Callable[[dict[str, Any]], None]]:
    """Ways to turn a checkpoint's config (or the file itself) into code that touches
    ``marker``."""
    torch.save(_Touch(marker), tmp / "payload.pkl")  # what torch.load(weights_only=False) runs
    hub = tmp / "hub"
    hub.mkdir(exist_ok=True)
    (hub / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef m():\n    pass\n")
    touch = f"touch {marker}"

    def data(node: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        return lambda blob: blob["config"].__setitem__("data", node)

    return {
        "torch.load": data({"_target_": "torch.load", "f": str(tmp / "payload.pkl"),
                            "weights_only": False}),
        "torch.hub.load": data({"_target_": "torch.hub.load", "repo_or_dir": str(hub),
                                "source": "local", "model": "m", "trust_repo": True}),
        "builtins.eval": data({"_target_": "builtins.eval",
                               "_args_": [f"__import__('os').system({touch!r})"]}),
        "os.system": data({"_target_": "os.system", "command": touch}),
        "module attribute": data({"_target_": "metarun.engine.checkpoint.os.system",
                                  "command": touch}),
        "_args_ nested": lambda blob: blob["config"]["backbone"].__setitem__(
            "_args_", [{"_target_": "os.system", "command": touch}]),
        "_partial_": lambda blob: blob["config"].__setitem__(
            "data", {"_target_": "os.system", "_partial_": True, "command": touch}),
        "pickled callable": lambda blob: blob.__setitem__("hook", _Touch(marker)),
    }


def _craft(finished: Path, tmp: Path, name: str) -> tuple[Path, Path]:
    """A copy of ``finished`` whose best.pt and last.pt carry payload ``name``; returns the
    run copy and the marker that must never appear."""
    marker = tmp / f"marker-{name.replace(' ', '_')}"
    crafted = tmp / f"run-{name.replace(' ', '_')}"
    shutil.copytree(finished, crafted)
    blob = load_checkpoint(finished / "checkpoints" / "best.pt")
    _payloads(tmp, marker)[name](blob)
    for file in ("best.pt", "last.pt"):
        if name == "pickled callable":  # not writable by save_checkpoint's plain data
            torch.save(blob, crafted / "checkpoints" / file)
        else:
            save_checkpoint(crafted / "checkpoints" / file, blob)
    (crafted / "checkpoints" / "last.prev.pt").unlink(missing_ok=True)
    (crafted / "summary.json").write_text('{"status": "preempted", "resumable": true}')
    return crafted, marker


NAMES = ["torch.load", "torch.hub.load", "builtins.eval", "os.system", "module attribute",
         "_args_ nested", "_partial_", "pickled callable"]


@pytest.mark.parametrize("name", NAMES)
def test_no_entry_point_runs_a_crafted_checkpoint(name: str, finished: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    crafted, marker = _craft(finished, tmp_path, name)
    best = crafted / "checkpoints" / "best.pt"
    refused = (ValueError, FileNotFoundError)
    with pytest.raises(ValueError, match="not a component metarun ships|not allowed in a stored"
                       "|not a loadable metarun checkpoint"):
        metarun.load(str(best), device="cpu")
    with pytest.raises(ValueError):
        evaluate_checkpoint(crafted, tmp_path / "eval", device="cpu")
    with pytest.raises(ValueError):
        ensemble([best, best], "average", tmp_path / "ens", device="cpu")
    with pytest.raises(refused):
        run(compose_config(*SINE, f"train.resume={crafted}"), tmp_path / "unused")
    assert not marker.exists()


@pytest.mark.parametrize(("command", "name"), [("metarun-eval", "torch.load"),
                                               ("metarun-ensemble", "torch.hub.load"),
                                               ("metarun", "pickled callable")])
def test_the_commands_refuse_it_in_one_line_with_status_2(command: str, name: str,
                                                          finished: Path, tmp_path: Path,
                                                          env: dict[str, str]) -> None:
    """The same refusals through the console scripts."""
    crafted, marker = _craft(finished, tmp_path, name)
    args = {"metarun-eval": [f"checkpoint={crafted}", "device=cpu",
                             f"hydra.run.dir={tmp_path / 'eval'}"],
            "metarun-ensemble": ["average", str(crafted), str(crafted), "device=cpu",
                                 f"hydra.run.dir={tmp_path / 'ens'}"],
            "metarun": [*SINE, f"train.resume={crafted}", f"hydra.run.dir={tmp_path / 'r'}"]}
    proc = run_command(args[command], env, tmp_path, name=command)
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if "ERROR" in line or "error:" in line]
    assert proc.returncode == 2 and len(errors) == 1, output
    assert "Traceback" not in output
    assert not marker.exists()


@pytest.mark.parametrize("name", ["torch.load", "torch.hub.load"])
def test_the_payloads_are_live(name: str, finished: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: with the allowlist switched off these payloads do run, so the tests above
    would see it if a loader stopped checking."""
    import metarun.configs

    crafted, marker = _craft(finished, tmp_path, name)
    monkeypatch.setattr(metarun.configs, "check_stored_config", lambda *args: None)
    with pytest.raises(Exception):  # noqa: B017 - what breaks after the payload ran
        metarun.load(str(crafted / "checkpoints" / "best.pt"), device="cpu")
    assert marker.exists()
