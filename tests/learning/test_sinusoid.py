"""Sinusoid regression learning runs: every method that can regress must learn to adapt.

After meta-training, adapting to a task's K support points must bring the query MSE well
below the MSE of the same meta-trained model *before* adaptation (which can do no better than
predict one function for all tasks, about the tasks' variance: E[A^2]/2 ~ 4.2).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from metarun.build import algorithm as build_algorithm
from metarun.build import fixed_episodes
from metarun.engine.checkpoint import load_checkpoint
from metarun.engine.evaluate import evaluate
from metarun.jobs.train import run
from metarun.types import Split
from tests.helpers import compose_config

ALGORITHMS = {  # the MLP steps are cheap (~2 ms per task on 2 CPU cores)
    "maml": ["train.iterations=2000"],
    "fomaml": ["algo=maml", "algo.first_order=true", "train.iterations=2000"],
    "anil": ["algo=anil", "train.iterations=2000"],
    "metasgd": ["algo=metasgd"],
    "mamlpp": ["algo=mamlpp", "train.iterations=1000", "algo.epoch_steps=100",
               "algo.msl_epochs=3", "train.lr_schedule=cosine"],
    "reptile": ["algo=reptile", "train.iterations=300"],
}


# About 3.5 minutes in all on a 2-core CPU (205 s in one process, 2026-12-08: MAML++ 63 s,
# Reptile 53 s), so slow: the default suite had grown past 12 minutes there. Shorter training
# leaves too little margin: with 40% of these iterations (Meta-SGD half), first-order MAML and
# Reptile reached 0.49 of the unadapted MSE, and Meta-SGD (0.57) and MAML++ (0.78) failed
# (measured the same day); the test's bar is 0.5. Still the longest of its file, so it starts
# early (tests/conftest.py).
@pytest.mark.slow
@pytest.mark.longest
@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_adaptation_beats_the_unadapted_model(name: str, tmp_path: Path) -> None:
    cfg = compose_config("device=cpu", "data=sinusoid", "train.iterations=500",
                         "train.meta_batch=8", "eval.val_episodes=50",
                         "eval.test_episodes=200", *ALGORITHMS[name])
    cfg.train.eval_every = cfg.train.iterations // 2
    summary = run(cfg, tmp_path).summary
    assert summary["task_type"] == "regression" and summary["metric"] == "mse"
    assert summary["higher_is_better"] is False
    adapted = summary["test"]["mse"]

    dataset = instantiate(cfg.data)
    algorithm = build_algorithm(cfg, dataset)
    algorithm.load_state_dict(load_checkpoint(tmp_path / "checkpoints" / "best.pt")["algorithm"])
    algorithm.test_inner_steps = 0  # the same meta-trained model, not adapted
    test = fixed_episodes(cfg, dataset.load(), Split.TEST)
    unadapted = evaluate(algorithm, test)
    assert unadapted.metric == "mse" and unadapted.episodes == 200
    print(f"{name}: test mse {adapted:.3f} adapted, {unadapted.score:.3f} unadapted")
    assert unadapted.score > 2.0, "the unadapted model cannot fit every sine"
    assert adapted < 0.5 * unadapted.score, (adapted, unadapted.score)
