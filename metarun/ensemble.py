"""Ensembles of finished runs, meta-tested on one fixed set of episodes.

Three ways to combine meta-trained models (``method``):

* ``average`` (model averaging): every member adapts to the support set on its own; their
  predicted class probabilities (regression: predicted values) are averaged.
* ``select`` (model selection): the member with the best validation score recorded in its
  checkpoint is used alone.
* ``fuse`` (model fusion): the members' weights (and batch-norm statistics) are averaged into
  one model; the members must share algorithm, backbone and every tensor's shape.

Every member, and the ensemble, is scored on the same episodes, so the rows of the report
compare like with like. ``metarun-ensemble`` is the command-line front end.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from metarun.algorithms.base import Algorithm
from metarun.api import Learner, restore
from metarun.configs import LOCATION_KEYS
from metarun.engine.checkpoint import load_checkpoint
from metarun.engine.evaluate import summarise
from metarun.tasktypes import TaskType
from metarun.types import Episode, EvalResult, Split

log = logging.getLogger("metarun")

METHODS = ("average", "select", "fuse")
#: Data keys that say where files are, not which tasks: they may differ between members.
_LOCATION_KEYS = tuple(k.removeprefix("data.") for k in LOCATION_KEYS if k.startswith("data."))


@dataclass
class Member:
    """One finished run: its checkpoint file, learner, best validation score, and the saved
    weights and class count its model is rebuilt from."""

    path: Path
    learner: Learner
    val_score: float
    state: dict[str, Tensor]
    train_classes: int | None

    @property
    def algorithm(self) -> Algorithm:
        return self.learner.algorithm

    @property
    def name(self) -> str:
        return self.learner.config.algo._target_.rsplit(".", 1)[-1]


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's ``checkpoints/best.pt``."""
    path = Path(path)
    return path / "checkpoints" / "best.pt" if path.is_dir() else path


def load_members(paths: list[str | Path], device: str = "auto") -> list[Member]:
    """Load every member (nothing in the files is executed; see :func:`metarun.load`)."""
    members = []
    for p in paths:
        path = checkpoint_file(p)
        blob = load_checkpoint(path)
        learner = restore(blob, device, source=str(path))
        best = blob.get("best") or {}
        val = float(best.get(learner.algorithm.task_type.metric, float("nan")))
        members.append(Member(path, learner, val, blob["algorithm"], blob.get("train_classes")))
    return members


def _data_key(config: DictConfig) -> dict[str, Any]:
    data = OmegaConf.to_container(config.data, resolve=True)
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items() if k not in _LOCATION_KEYS}


def check_compatible(members: list[Member], method: str) -> None:
    """Raise ``ValueError`` unless the members can be combined by ``method``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if not members:
        raise ValueError("an ensemble needs at least one checkpoint")
    first = members[0]
    for m in members[1:]:
        if m.algorithm.task_type.name != first.algorithm.task_type.name:
            raise ValueError(f"{m.path} learns {m.algorithm.task_type.name} tasks, "
                             f"{first.path} {first.algorithm.task_type.name} tasks")
        if _data_key(m.learner.config) != _data_key(first.learner.config):
            raise ValueError(f"{m.path} was trained on different data from {first.path}: "
                             f"{_data_key(m.learner.config)} vs "
                             f"{_data_key(first.learner.config)}")
    if method == "fuse":
        for m in members[1:]:
            for key in ("algo", "backbone"):
                if m.learner.config[key] != first.learner.config[key]:
                    raise ValueError(f"fuse needs one architecture: {m.path} and {first.path} "
                                     f"differ in {key}")
            shapes = {k: v.shape for k, v in m.state.items()}
            if shapes != {k: v.shape for k, v in first.state.items()}:
                raise ValueError(f"fuse needs the same tensors: {m.path} and {first.path} "
                                 "differ in their parameter names or shapes")


def episode_config(members: list[Member], overrides: dict[str, Any]) -> DictConfig:
    """The config that defines the test episodes, the same whatever the members' order.

    ``overrides`` win. Otherwise the members must agree on the episode shape and count
    (``eval.ways``, ``eval.shots``, ``eval.queries``, ``eval.test_episodes``), and the seed is
    the smallest member seed (their common seed when they share one).
    """
    cfg = members[0].learner.config.copy()
    for key in ("eval.ways", "eval.shots", "eval.queries", "eval.test_episodes"):
        if key in overrides:
            continue
        values = {OmegaConf.select(m.learner.config, key) for m in members}
        if len(values) > 1:
            raise ValueError(f"the members differ in {key} ({sorted(values)}); choose one with "
                             f"--{key.split('.')[1].replace('test_', '')}")
    cfg.seed = min(int(m.learner.config.seed) for m in members)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def fused_state(states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The element-wise mean of floating-point tensors; other tensors (batch counters) are
    taken from the first state."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = torch.stack([s[key] for s in states]).mean(0)
        else:
            out[key] = first.clone()
    return out


def average_predictions(predictions: list[Tensor], task_type: TaskType) -> Tensor:
    """The members' mean prediction: classification, the log of the mean class probabilities
    (so cross-entropy on it is the ensemble's negative log-likelihood); regression, the mean
    value."""
    stacked = torch.stack(predictions)
    if task_type.name == "classification":
        return stacked.softmax(-1).mean(0).log()
    return stacked.mean(0)


def evaluate_together(algorithms: list[Algorithm], episodes: list[Episode],
                      task_type: TaskType) -> tuple[list[EvalResult], EvalResult]:
    """Score every algorithm, and the average of their predictions, on the same episodes."""
    member_scores: list[list[float]] = [[] for _ in algorithms]
    member_losses: list[list[float]] = [[] for _ in algorithms]
    scores, losses = [], []
    with torch.no_grad():
        for episode in episodes:
            predictions = []
            for i, algorithm in enumerate(algorithms):
                p = algorithm.adapt(episode.support_x, episode.support_y)(episode.query_x)
                loss, score = task_type.loss_and_score(p, episode.query_y)
                member_scores[i].append(float(score))
                member_losses[i].append(float(loss))
                predictions.append(p)
            loss, score = task_type.loss_and_score(average_predictions(predictions, task_type),
                                                   episode.query_y)
            scores.append(float(score))
            losses.append(float(loss))
    metric = task_type.metric
    members = [summarise(s, lo, metric) for s, lo in zip(member_scores, member_losses,
                                                         strict=True)]
    return members, summarise(scores, losses, metric)


def ensemble(paths: list[str | Path], method: str, output_dir: str | Path,
             device: str = "auto", overrides: dict[str, Any] | None = None,
             split: Split = Split.TEST) -> dict[str, Any]:
    """Evaluate the checkpoints at ``paths`` and their ensemble; write ``summary.json``.

    Args:
        paths: checkpoint files or run directories (their ``checkpoints/best.pt``).
        method: ``average``, ``select`` or ``fuse``.
        output_dir: where ``summary.json`` goes.
        device: as for :func:`metarun.load`.
        overrides: ``eval`` keys (``ways``, ``shots``, ``queries``, ``test_episodes``),
            ``seed`` and ``data.root`` for the episodes; see :func:`episode_config` for the
            defaults.
        split: whose classes the episodes come from (the test split unless told).

    Returns:
        The summary: every member's and the ensemble's test score with its 95% CI.
    """
    from hydra.utils import instantiate

    from metarun.run import fixed_episodes
    from metarun.rundir import write_summary

    t0 = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    members = load_members(paths, device)
    check_compatible(members, method)
    first = members[0]
    cfg = episode_config(members, overrides or {})
    task_type = first.algorithm.task_type
    for m in members:
        m.algorithm.check_task(cfg.eval.ways)
    dataset = instantiate(cfg.data)
    test = fixed_episodes(cfg, dataset.load(), split)
    target = first.learner.device
    episodes = [e.to(target) for e in test]

    chosen: Member | None = None
    if method == "fuse":
        if len({int(m.learner.config.seed) for m in members}) > 1:
            log.warning("fusing members trained from different seeds: the weights of "
                        "independently initialised networks rarely average into a working one")
        fused = restore({"config": OmegaConf.to_container(first.learner.config),
                         "train_classes": first.train_classes,
                         "algorithm": fused_state([m.state for m in members])},
                        str(target)).algorithm
        results, _ = evaluate_together([m.algorithm for m in members] + [fused], episodes,
                                       task_type)
        member_results, combined = results[:-1], results[-1]
    else:
        member_results, combined = evaluate_together([m.algorithm for m in members], episodes,
                                                      task_type)
        if method == "select":
            finite = [m for m in members if math.isfinite(m.val_score)]
            if not finite:
                raise ValueError("select needs validation scores; no checkpoint records one")
            chosen = finite[0]
            for m in finite[1:]:
                if task_type.better(m.val_score, chosen.val_score):
                    chosen = m
            combined = member_results[members.index(chosen)]

    summary: dict[str, Any] = {
        "method": method,
        "metric": task_type.metric,
        "higher_is_better": task_type.higher_is_better,
        "eval_task": {"ways": cfg.eval.ways, "shots": cfg.eval.shots,
                      "queries": cfg.eval.queries},
        "seed": int(cfg.seed),
        "split": split.value,
        "episodes_sha256": test.digest(),
        "members": [{"checkpoint": str(m.path), "algo": m.name,
                     f"val_best_{task_type.metric}": m.val_score, "test": r.as_dict()}
                    for m, r in zip(members, member_results, strict=True)],
        "ensemble": {"test": combined.as_dict(),
                     **({"selected": str(chosen.path)} if chosen is not None else {})},
        "device": str(target),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_summary(output_dir, summary)
    return summary


def _print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    metric = summary["metric"]
    percent = metric == "acc"

    def fmt(test: dict[str, Any]) -> str:
        v, ci = test[metric], test["ci95"]
        return f"{100 * v:.2f}% ± {100 * ci:.2f}%" if percent else f"{v:.4f} ± {ci:.4f}"

    table = Table(title=f"{summary['method']} ensemble, {summary['ensemble']['test']['episodes']}"
                  f" test episodes (seed {summary['seed']})")
    table.add_column("#")
    table.add_column("member", overflow="fold")
    for column in ("algo", f"val best {metric}", f"test {metric} (95% CI)"):
        table.add_column(column)
    selected = summary["ensemble"].get("selected")
    chosen = ""
    for i, m in enumerate(summary["members"], 1):
        val = m[f"val_best_{metric}"]
        table.add_row(str(i), m["checkpoint"], m["algo"],
                      (f"{100 * val:.2f}%" if percent else f"{val:.4f}")
                      if math.isfinite(val) else "-", fmt(m["test"]))
        if m["checkpoint"] == selected:
            chosen = f"#{i}"
    table.add_row("", f"ensemble ({summary['method']}{', ' + chosen if chosen else ''})", "",
                  "", fmt(summary["ensemble"]["test"]), style="bold")
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    """``metarun-ensemble``: evaluate finished runs and their ensemble on the same episodes."""
    parser = argparse.ArgumentParser(
        prog="metarun-ensemble",
        description="Meta-test several finished runs and their ensemble on one fixed set of "
                    "test episodes: the members' episode settings, with the smallest member "
                    "seed, unless overridden.")
    parser.add_argument("method", choices=METHODS,
                        help="average: mean predicted probabilities; select: best validation "
                             "score; fuse: mean weights (one architecture)")
    parser.add_argument("checkpoints", nargs="+",
                        help="checkpoint files or run directories (their checkpoints/best.pt)")
    parser.add_argument("--out", default=None,
                        help="output folder for summary.json (default: "
                             "outputs/ensemble/<date>/<time>)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--episodes", type=int, help="number of test episodes")
    parser.add_argument("--ways", type=int)
    parser.add_argument("--shots", type=int)
    parser.add_argument("--queries", type=int)
    parser.add_argument("--seed", type=int, help="seed of the test episodes")
    parser.add_argument("--data-root", help="where the dataset lives, if not where the first "
                                            "member was trained")
    args = parser.parse_args(argv)
    from metarun.rundir import refuse_results

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(levelname)s] %(message)s",
                        datefmt="%H:%M:%S")
    overrides: dict[str, Any] = {}
    for key, value in (("eval.test_episodes", args.episodes), ("eval.ways", args.ways),
                       ("eval.shots", args.shots), ("eval.queries", args.queries),
                       ("seed", args.seed), ("data.root", args.data_root)):
        if value is not None:
            overrides[key] = value
    out = args.out or time.strftime("outputs/ensemble/%Y-%m-%d/%H-%M-%S")
    try:
        refuse_results(out, "--out")  # before any evaluation work
        summary = ensemble(args.checkpoints, args.method, out, args.device, overrides)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"metarun-ensemble: error: {e}", file=sys.stderr)
        return 2
    _print_table(summary)
    print(f"summary: {Path(out) / 'summary.json'}")
    return 0


def console() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    console()
