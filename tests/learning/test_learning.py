"""Small real learning runs on Omniglot.

Each algorithm must clear chance (20% at 5-way) by a wide margin *and* beat the same model
before meta-training on the same test episodes: an untrained Conv-4 already reaches ~60% with
ProtoNet's nearest-mean rule or with 50 steps of fine-tuning, so chance alone is a weak bar.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from metarun.build import algorithm as build_algorithm
from metarun.build import fixed_episodes
from metarun.engine.evaluate import evaluate
from metarun.jobs.train import run
from metarun.types import Split


def _untrained_accuracy(cfg: DictConfig) -> float:
    """The run's model as initialised (same seed), meta-tested on the run's test episodes."""
    dataset = instantiate(cfg.data)
    splits = dataset.load()
    torch.manual_seed(cfg.seed)
    algorithm = build_algorithm(cfg, dataset, splits[Split.TRAIN].num_classes)
    return evaluate(algorithm, fixed_episodes(cfg, splits, Split.TEST)).score


@pytest.mark.parametrize(("algo", "overrides", "floor", "gain"), [
    # The task's own 5-way episodes, not the Omniglot recipe's 60-way ones (4 of those a step
    # would take four times as long).
    ("protonet", ["train.iterations=100", "algo.train_ways=null", "algo.train_queries=null"],
     0.70, 0.15),
    # Matching and Relation Networks learn more slowly than ProtoNet: after 100 steps they
    # reached 72.8% (untrained 60.5%) and 43.2% (untrained 20.0%: the untrained relation
    # module scores every class alike); after 400, measured here, 80.4% +/- 2.1% and
    # 87.8% +/- 1.9% (66.7% +/- 2.4% with 8 hidden units, before 2026-12-07), ~2 minutes
    # each, so slow.
    pytest.param("matchingnet", ["train.iterations=400"], 0.70, 0.15,
                 marks=pytest.mark.slow),
    pytest.param("relationnet", ["train.iterations=400"], 0.50, 0.15,
                 marks=pytest.mark.slow),
    # Issue 4's other learners, ~2-3 minutes each, so slow. Siamese networks train on
    # verification pairs, the black box (SNAIL) from scratch; the baselines pre-train on
    # 256 labelled images per step over all 4400 training classes.
    # Siamese networks on Omniglot train on every pair of 8-way episodes by default, and on
    # sampled pairs elsewhere: 200 steps of each measured here 76.1% +/- 2.3% and 67.9% +/-
    # 2.4% against 24.2% untrained, 71 s for both (400 steps of sampled pairs, the test until
    # 2026-12-07: 78.7%).
    pytest.param("siamese", ["train.iterations=200"], 0.65, 0.15, marks=pytest.mark.slow),
    pytest.param("siamese", ["train.iterations=200", "algo.pairs=32", "algo.train_ways=null",
                             "algo.train_queries=null"], 0.60, 0.15, marks=pytest.mark.slow,
                 id="siamese-sampled-pairs"),
    # The black box's attention starts with keys equal to queries (81% validation accuracy
    # after 300 steps, measured; 26% without): docs/algorithms.md. Five training queries per
    # class, as its Omniglot experiment: measured here 77.3% +/- 2.4% against 18.8% untrained
    # in 67 s (with the task's 15: 81.8% +/- 2.0%, about 3 minutes).
    pytest.param("blackbox", ["train.iterations=400", "algo.train_queries=5"], 0.60, 0.30,
                 marks=pytest.mark.slow),
    # The longest of the slow tests (254 s in a CI worker on 2026-12-07), so it starts first.
    pytest.param("baseline", ["train.iterations=400"], 0.60, 0.15,
                 marks=[pytest.mark.slow, pytest.mark.longest]),
    pytest.param("baselinepp", ["train.iterations=400"], 0.60, 0.15, marks=pytest.mark.slow),
    # MAML's Omniglot recipe (two training queries per class) at this test's 4 tasks a step,
    # in a loop, with 3 test steps: with 10, the untrained Conv-4 already fine-tunes to 67.6%
    # (measured with the random head). Measured here (2026-12-07), 250 steps: 75.3% +/- 3.2%
    # against 27.5% untrained, 63 s with the untrained model's test, on one thread; 73.4% +/-
    # 3.2% in 40 s on two. Until then the test took 150 steps with the task's 15 queries:
    # 63.4% +/- 3.0% in 90 s on one thread (with two queries, 58.7% in 46 s).
    # The default suite's longest test: its file (which --dist loadfile keeps in one worker,
    # about 2 minutes with ProtoNet's and MNIST's) starts first, so that the other worker
    # takes the short tests meanwhile instead of waiting on it at the end.
    pytest.param("maml", ["train.iterations=250", "algo.train_queries=2",
                          "algo.test_inner_steps=3", "algo.vectorize=false"], 0.60, 0.30,
                 marks=pytest.mark.longest),
    # ANIL and Meta-SGD share MAML's inner loop (their own parts have unit tests); about a
    # minute each, so slow, to keep the default suite near 10 minutes.
    pytest.param("anil", ["train.iterations=150"], 0.50, 0.15, marks=pytest.mark.slow),
    pytest.param("metasgd", ["train.iterations=150"], 0.50, 0.15, marks=pytest.mark.slow),
    # MAML++ with every switch on; 3 inner steps and 50-step epochs so that the multi-step
    # loss anneals away and derivative-order annealing switches within the run. Measured
    # here: 89.6% +/- 1.5% against 56.6% untrained, in ~2.5 minutes, so slow.
    pytest.param("mamlpp", ["train.iterations=150", "algo.inner_steps=3",
                            "algo.test_inner_steps=3", "algo.epoch_steps=50",
                            "algo.msl_epochs=2", "algo.first_order_epochs=1",
                            "train.lr_schedule=cosine"], 0.50, 0.15, marks=pytest.mark.slow),
    # Reptile with its Omniglot experiment's inner loop (two steps of Adam at 1e-2; the test's
    # fine-tuning at 1e-2 too, so the untrained initialisation scores higher than at the
    # paper's 1e-3): measured here 84.8% +/- 1.8% after 100 steps against 76.7% untrained, in
    # 100 s. The paper's inner loop (5 steps at 1e-3) took 300 steps for 74.0% against 66.3%,
    # and 12-21 minutes in a CI worker.
    pytest.param("reptile", ["train.iterations=100", "algo.inner_lr=0.01", "algo.inner_steps=2",
                             "algo.test_inner_steps=10", "optim=sgd", "optim.lr=1.0",
                             "optim.momentum=0", "eval.val_episodes=20"],
                 0.75, 0.05, marks=pytest.mark.slow),
], ids=lambda v: v if isinstance(v, str) else "")
def test_meta_training_learns(algo: str, overrides: list[str], floor: float, gain: float,
                              tmp_path: Path, make_config) -> None:  # type: ignore[no-untyped-def]
    cfg = make_config("task=5w1s", "train.meta_batch=4", "eval.val_episodes=50",
                      "eval.test_episodes=100", f"algo={algo}", *overrides)
    iterations = cfg.train.iterations
    cfg.train.eval_every = iterations // 2
    summary = run(cfg, tmp_path).summary
    acc, ci95 = summary["test"]["acc"], summary["test"]["ci95"]
    before = _untrained_accuracy(cfg)
    print(f"{algo}: test acc {acc:.4f} +/- {ci95:.4f}; untrained {before:.4f}")
    assert acc - ci95 > floor, summary["test"]
    assert acc - before > gain, (acc, before)


def test_meta_training_on_real_mnist_beats_the_untrained_model(
        tmp_path: Path, mnist_root: Path, make_config) -> None:  # type: ignore[no-untyped-def]
    """ProtoNet on the real MNIST digits 0-4, tested on 5-9 (``data=mnist``)."""
    cfg = make_config("data=mnist", f"data.root={mnist_root}", "algo=protonet", "task=5w1s",
                      "train.iterations=60", "train.eval_every=60", "eval.val_episodes=20",
                      "eval.test_episodes=200")
    summary = run(cfg, tmp_path).summary
    acc, ci95 = summary["test"]["acc"], summary["test"]["ci95"]
    before = _untrained_accuracy(cfg)
    print(f"mnist protonet: test acc {acc:.4f} +/- {ci95:.4f}; untrained {before:.4f}")
    assert acc - ci95 > before + 0.10, (acc, ci95, before)  # measured: 60.6% vs 39.7%
