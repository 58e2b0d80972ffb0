"""Every option of every config group composes, resolves and instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from metarun.algorithms.base import Algorithm
from metarun.build import algorithm as build_algorithm
from metarun.configs import config_dir
from tests.helpers import compose_config

CONF = Path(config_dir())
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]
REGRESSION_TASKS = {"k5", "k10", "k20"}


def _overrides(group: str, option: str) -> list[str]:
    """How to select ``option``: regression tasks go with the sinusoid, and an ``algo_data``
    option is chosen by its (algo, data) pair, never by name."""
    if group == "algo_data":
        algo, data = option.rsplit("_", 1)
        return [f"algo={algo}", f"data={data}"]
    if group == "task" and option in REGRESSION_TASKS:
        return ["data=sinusoid", f"task={option}"]
    return [f"{group}={option}"]
REQUIRED_KEYS = ["task.ways", "task.shots", "task.queries", "train.iterations",
                 "train.meta_batch", "train.eval_every", "eval.val_episodes",
                 "eval.test_episodes", "seed", "data.root", "data.split", "device.name"]


def test_required_groups_exist() -> None:
    assert {"data", "task", "backbone", "algo", "optim", "device", "train", "eval",
            "experiment"} <= set(GROUPS)


def test_defaults() -> None:
    cfg = compose_config()
    assert cfg.algo._target_.endswith(".MAML")
    assert cfg.data._target_.endswith(".Omniglot")
    assert cfg.backbone._target_.endswith(".Conv4")
    assert (cfg.task.ways, cfg.task.shots) == (5, 1)
    assert cfg.device.name == "auto"
    for key in REQUIRED_KEYS:
        assert OmegaConf.select(cfg, key) is not None, key


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_instantiates(group: str, option: str) -> None:
    cfg = compose_config(*_overrides(group, option))
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    dataset = instantiate(cfg.data)
    algorithm = build_algorithm(cfg, dataset, train_classes=10)  # data not loaded here
    assert isinstance(algorithm, Algorithm)
    algorithm.check_task(cfg.eval.ways)
    optimizer = instantiate(cfg.optim)(algorithm.parameters())
    assert isinstance(optimizer, torch.optim.Optimizer)


def test_interpolations_follow_the_task() -> None:
    cfg = compose_config("task=20w5s")
    assert (cfg.algo.ways, cfg.eval.ways, cfg.eval.shots) == (20, 20, 5)
    cfg = compose_config("algo.inner_lr=0.1")
    assert cfg.algo.test_inner_lr == 0.1


def test_data_root_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METARUN_DATA", "/some/where")
    assert compose_config().data.root == "/some/where"
    monkeypatch.delenv("METARUN_DATA")
    assert compose_config().data.root == "~/.cache/metarun/data"


@pytest.mark.parametrize("override", ["task.wayz=5", "algo=nonexistent", "nonsense=1"])
def test_unknown_keys_and_options_fail(override: str) -> None:
    with pytest.raises(ConfigCompositionException):
        compose_config(override)


def test_sinusoid_chooses_its_task_backbone_and_inner_lr() -> None:
    cfg = compose_config("data=sinusoid")
    assert cfg.backbone._target_.endswith(".MLP")
    assert (cfg.task.ways, cfg.task.shots) == (1, 10)
    assert cfg.algo.inner_lr == 0.01  # from conf/algo_data/maml_sinusoid.yaml
    # The command line still wins over the dataset's and the pair's choices.
    cfg = compose_config("data=sinusoid", "task=k5", "algo.inner_lr=0.02")
    assert (cfg.task.shots, cfg.algo.inner_lr, cfg.algo.test_inner_lr) == (5, 0.02, 0.02)
    assert compose_config("algo=maml").algo.inner_lr == 0.4  # images: untouched


def test_algo_data_options_name_real_pairs() -> None:
    algos = {f.stem for f in (CONF / "algo").glob("*.yaml")}
    datas = {f.stem for f in (CONF / "data").glob("*.yaml")}
    for f in (CONF / "algo_data").glob("*.yaml"):
        algo, data = f.stem.rsplit("_", 1)
        assert algo in algos and data in datas, f.name


def test_regression_with_a_classification_only_algorithm_fails_clearly() -> None:
    cfg = compose_config("data=sinusoid", "algo=protonet")
    with pytest.raises(Exception, match="classification tasks only"):
        build_algorithm(cfg, instantiate(cfg.data))


def test_maml_on_omniglot_chooses_its_recipe_and_keeps_the_test_protocol() -> None:
    """conf/algo_data/maml_omniglot.yaml trains on 2 queries per class; the fixed test episodes
    keep the task's 15, and the paper experiments keep their own recipe."""
    cfg = compose_config("algo=maml", "data=omniglot")
    assert (cfg.algo.train_queries, cfg.eval.queries, cfg.train.lr_schedule) == (2, 15, "cosine")
    assert (cfg.train.iterations, cfg.train.meta_batch, cfg.algo.head) == (800, 16, "zero_init")
    assert compose_config("algo=maml", "data=omniglot", "task=20w1s").eval.queries == 5
    for experiment in ("maml_omniglot_5w1s", "maml_omniglot_20w1s"):  # the paper's head
        paper = compose_config(f"experiment={experiment}")
        assert (paper.algo.train_queries, paper.train.lr_schedule, paper.algo.head) == (
            None, "constant", "learned")
    assert compose_config("algo=maml", "data=sinusoid").train.iterations == 1000
    assert compose_config("algo=anil", "data=omniglot").algo.train_queries is None
