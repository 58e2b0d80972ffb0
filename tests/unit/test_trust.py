"""A stored config names only what metarun ships: the allowlist comes from conf/ itself, and
every other ``_target_``, Hydra special key or interpolation is refused before any import."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from metarun.configs import (
    UntrustedConfigError,
    check_stored_config,
    config_dir,
    shipped_targets,
    trusted_config,
)
from tests.helpers import compose_config


def _resolved(*overrides: str) -> dict[str, Any]:
    return OmegaConf.to_container(compose_config(*overrides), resolve=True)  # type: ignore[return-value]


def test_the_allowlist_is_every_target_of_the_config_files_at_its_place() -> None:
    targets = shipped_targets()
    conf = Path(config_dir())
    algos = {OmegaConf.load(f).get("_target_") for f in (conf / "algo").glob("*.yaml")} - {None}
    assert {t for t, _ in targets["algo"]} == algos
    assert ("metarun.data.sinusoid.Sinusoid", False) in targets["data"]  # a _global_ package
    assert ("torch.optim.Adam", True) in targets["optim"]  # with its _partial_
    assert not any(place.startswith("hydra") for place in targets)


@pytest.mark.parametrize("overrides", [
    [], ["algo=protonet"], ["data=sinusoid", "algo=mamlpp"], ["algo=baseline", "optim=sgd"],
    ["experiment=maml_omniglot_20w1s"], ["logger=tensorboard"],
    ["logger=[tensorboard,csv,mlflow,wandb]"],
])
def test_every_config_metarun_composes_is_trusted(overrides: list[str]) -> None:
    check_stored_config(_resolved(*overrides), "run")


PAYLOADS: list[tuple[str, dict[str, Any], str]] = [
    ("torch.load", {"data": {"_target_": "torch.load", "f": "payload.pkl",
                             "weights_only": False}}, "data._target_ = 'torch.load'"),
    ("torch.hub.load", {"data": {"_target_": "torch.hub.load", "repo_or_dir": ".",
                                 "source": "local", "model": "m", "trust_repo": True}},
     "data._target_ = 'torch.hub.load'"),
    ("builtins.eval", {"algo": {"_target_": "builtins.eval", "_args_": ["1"]}},
     "algo._target_ = 'builtins.eval'"),
    ("os.system", {"backbone": {"_target_": "os.system", "command": "true"}},
     "backbone._target_ = 'os.system'"),
    ("module attribute", {"data": {"_target_": "metarun.engine.checkpoint.os.system"}},
     "'metarun.engine.checkpoint.os.system' is not a component"),
    ("a shipped class elsewhere", {"data": {"_target_": "torch.optim.Adam", "params": []}},
     "metarun.data.omniglot.Omniglot, metarun.data.sinusoid.Sinusoid"),
    ("nested in _args_", {"backbone": {"_target_": "metarun.backbones.mlp.MLP",
                                       "_args_": [{"_target_": "os.system"}]}},
     "backbone._args_ is not allowed"),
    ("nested in a list", {"backbone": {"hidden": [{"_target_": "os.system"}]}},
     "backbone.hidden[0]._target_ = 'os.system'"),
    ("_partial_", {"data": {"_target_": "metarun.data.sinusoid.Sinusoid", "_partial_": True}},
     "(_partial_ = True) is not a component"),
    ("_recursive_", {"algo": {"_target_": "metarun.algorithms.maml.MAML",
                              "_recursive_": False}}, "algo._recursive_ is not allowed"),
    ("interpolation", {"data": {"root": "${metarun.direction:os.system}"}},
     "is an interpolation"),
    ("a target that is not a string", {"data": {"_target_": ["os", "system"]}},
     "data._target_ = ['os', 'system']"),
]


@pytest.mark.parametrize(("payload", "expected"), [(p, e) for _, p, e in PAYLOADS],
                         ids=[name for name, _, _ in PAYLOADS])
def test_anything_else_is_refused_in_one_line_before_any_import(payload: dict[str, Any],
                                                                expected: str) -> None:
    config = _resolved("data=sinusoid")
    for group, node in payload.items():
        config[group] = {**config.get(group, {}), **copy.deepcopy(node)}
    before = set(sys.modules)
    with pytest.raises(UntrustedConfigError) as e:
        trusted_config({"config": config}, "evil.pt")
    message = str(e.value)
    assert expected in message and message.startswith("evil.pt: ") and "\n" not in message
    assert set(sys.modules) == before  # nothing was imported to decide


def test_a_checkpoint_without_a_config_is_refused() -> None:
    with pytest.raises(UntrustedConfigError, match="holds no run config"):
        trusted_config({"algorithm": {}}, "weights.pt")
