"""Small real learning runs: each algorithm must clear chance (20% at 5-way) by a wide margin.

Budgets measured on the 2-core development machine: ProtoNet ~40 s, MAML ~80 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from metarun.cli import _config_dir
from metarun.run import run


def _learn(tmp: Path, data_root: Path, cache_dir: Path, *overrides: str) -> dict:  # type: ignore[type-arg]
    with initialize_config_dir(config_dir=_config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "device=cpu", f"data.root={data_root}", f"data.cache_dir={cache_dir}",
            "task=5w1s", "train.meta_batch=4", "eval.val_episodes=50",
            "eval.test_episodes=100", *overrides])
    return run(cfg, tmp).summary


@pytest.mark.parametrize(("algo", "iterations", "floor"), [
    ("protonet", 100, 0.70),
    ("maml", 150, 0.50),
])
def test_clears_chance(algo: str, iterations: int, floor: float, tmp_path: Path,
                       data_root: Path, cache_dir: Path) -> None:
    summary = _learn(tmp_path, data_root, cache_dir, f"algo={algo}",
                     f"train.iterations={iterations}", f"train.eval_every={iterations // 2}")
    print(f"{algo}: test acc {summary['test']['acc']:.4f} +/- {summary['test']['ci95']:.4f}")
    assert summary["test"]["acc"] - summary["test"]["ci95"] > floor, summary["test"]
