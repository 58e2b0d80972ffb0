"""Ensembles of finished runs, meta-tested on one fixed set of episodes.

Three ways to combine meta-trained models (``method``):

* ``average`` (model averaging): every member adapts to the support set on its own; their
  predictions are averaged as their task type says (class probabilities; values).
* ``select`` (model selection): the member with the best validation score recorded in its
  checkpoint is used alone.
* ``fuse`` (model fusion): the members' weights (and batch-norm statistics) are averaged into
  one model; the members must share algorithm, backbone and every tensor's shape.

Every member, and the ensemble, is scored on the same episodes, so the rows of the report
compare like with like. ``metarun-eval checkpoint=[a,b,...] ensemble=METHOD`` runs it
(``metarun-ensemble METHOD a b ...`` is the same command).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from metarun import build
from metarun.algorithms.base import Algorithm
from metarun.build import saved
from metarun.configs import ENSEMBLE_METHODS
from metarun.device import resolve_device
from metarun.engine.checkpoint import checkpoint_file, load_checkpoint
from metarun.engine.evaluate import evaluate_each
from metarun.jobs.evaluate import split_algo_keys
from metarun.summary import COMPLETED, EVAL, write_summary
from metarun.tasktypes import TaskType
from metarun.types import Episode, EvalResult, Split

log = logging.getLogger("metarun")


@dataclass
class Member:
    """One finished run: its checkpoint file, rebuilt model, best validation score, and the
    saved weights and class count its model is rebuilt from."""

    path: Path
    config: DictConfig
    algorithm: Algorithm
    val_score: float
    state: dict[str, Tensor]
    train_classes: int | None

    @property
    def name(self) -> str:
        return build.info(self.config).algo


def load_members(paths: Sequence[str | Path], device: str = "auto",
                 changes: dict[str, Any] | None = None) -> list[Member]:
    """Load every member (nothing in the files is executed; see :func:`metarun.load`), with
    ``changes`` to each one's algorithm config (:func:`metarun.build.saved.restore`)."""
    target = resolve_device(device)
    members = []
    for p in paths:
        path = checkpoint_file(p)
        blob = load_checkpoint(path)
        restored = saved.restore(blob, str(path), changes)
        algorithm = restored.algorithm.to(target).eval()
        best = blob.get("best") or {}
        val = float(best.get(algorithm.task_type.metric, math.nan))
        members.append(Member(path, restored.config, algorithm, val, blob["algorithm"],
                              blob.get("train_classes")))
    return members


def check_compatible(members: list[Member], method: str) -> None:
    """Raise ``ValueError`` unless the members can be combined by ``method`` (one of
    :data:`~metarun.configs.ENSEMBLE_METHODS`, which :func:`ensemble` checks first)."""
    if not members:
        raise ValueError("an ensemble needs at least one checkpoint")
    first = members[0]
    for m in members[1:]:
        if type(m.algorithm.task_type) is not type(first.algorithm.task_type):
            raise ValueError(f"{m.path} learns {m.algorithm.task_type.name} tasks, "
                             f"{first.path} {first.algorithm.task_type.name} tasks")
        mine, theirs = saved.data_identity(m.config), saved.data_identity(first.config)
        if mine != theirs:
            raise ValueError(f"{m.path} was trained on different data from {first.path}: "
                             f"{mine} vs {theirs}")
    if method != "fuse":
        return
    for m in members[1:]:
        mine, theirs = saved.architecture(m.config), saved.architecture(first.config)
        for key in mine:
            if mine[key] != theirs[key]:
                raise ValueError(f"fuse needs one architecture: {m.path} and {first.path} "
                                 f"differ in {key}")
        if {k: v.shape for k, v in m.state.items()} != \
                {k: v.shape for k, v in first.state.items()}:
            raise ValueError(f"fuse needs the same tensors: {m.path} and {first.path} differ "
                             "in their parameter names or shapes")


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


def evaluate_together(algorithms: list[Algorithm], episodes: list[Episode],
                      task_type: TaskType, diverged_above: float | None = None,
                      progress: str | None = Split.TEST.progress_label,
                      ) -> tuple[list[EvalResult], EvalResult]:
    """Score every algorithm, and the average of their predictions, on the same episodes
    (``diverged_above`` and ``progress``: as :func:`metarun.engine.evaluate.evaluate`'s)."""
    def score(episode: Episode) -> list[tuple[float, float]]:
        predictions = [a.adapt(episode.support_x, episode.support_y)(episode.query_x)
                       for a in algorithms]
        predictions.append(task_type.average(torch.stack(predictions)))
        scored = [task_type.loss_and_score(p, episode.query_y) for p in predictions]
        return [(float(loss), float(value)) for loss, value in scored]

    results = evaluate_each(score, episodes, task_type, diverged_above, progress)
    return results[:-1], results[-1]


def _fused(members: list[Member], device: torch.device) -> Algorithm:
    if len({build.info(m.config).seed for m in members}) > 1:
        log.warning("fusing members trained from different seeds: the weights of "
                    "independently initialised networks rarely average into a working one")
    first = members[0]
    restored = saved.restore({"config": build.resolved(first.config),
                              "train_classes": first.train_classes,
                              "algorithm": fused_state([m.state for m in members])},
                             "the fused members")
    return restored.algorithm.to(device).eval()


def _selected(members: list[Member], task_type: TaskType) -> Member:
    finite = [m for m in members if math.isfinite(m.val_score)]
    if not finite:
        raise ValueError("select needs validation scores; no checkpoint records one")
    chosen = finite[0]
    for m in finite[1:]:
        if task_type.better(m.val_score, chosen.val_score):
            chosen = m
    return chosen


def _scores(members: list[Member], results: list[EvalResult], combined: EvalResult,
            chosen: Member | None, task_type: TaskType) -> dict[str, Any]:
    """The summary's ``members`` and ``ensemble`` sections."""
    return {
        "members": [{"checkpoint": str(m.path), "algo": m.name,
                     f"val_best_{task_type.metric}": m.val_score, "test": r.as_dict()}
                    for m, r in zip(members, results, strict=True)],
        "ensemble": {"test": combined.as_dict(),
                     **({"selected": str(chosen.path)} if chosen is not None else {})},
    }


def ensemble(paths: Sequence[str | Path], method: str, output_dir: str | Path,
             device: str = "auto", overrides: dict[str, Any] | None = None,
             split: Split = Split.TEST) -> dict[str, Any]:
    """Evaluate the checkpoints at ``paths`` and their ensemble; write ``summary.json``.

    Args:
        paths: checkpoint files or run directories (their ``checkpoints/best.pt``).
        method: ``average``, ``select`` or ``fuse``.
        output_dir: where ``summary.json`` goes.
        device: as for :func:`metarun.load`.
        overrides: run-config keys for the episodes (``eval.ways``, ``eval.shots``,
            ``eval.queries``, ``eval.test_episodes``, ``seed``, ``data.root`` ...); see
            :func:`metarun.build.saved.common_episodes` for the defaults. ``algo.<key>`` keys change
            every member's algorithm (each must have the key).
        split: whose classes the episodes come from (the test split unless told).

    Returns:
        The summary: every member's and the ensemble's score with its 95% CI.
    """
    t0 = time.perf_counter()
    if method not in ENSEMBLE_METHODS:
        raise ValueError(f"method must be one of {ENSEMBLE_METHODS}; got {method!r}")
    changes, rest = split_algo_keys(overrides or {})
    members = load_members(paths, device, changes)
    check_compatible(members, method)
    cfg = saved.common_episodes([m.config for m in members], rest)
    about = build.info(cfg)
    task_type = members[0].algorithm.task_type
    for m in members:
        m.algorithm.check_task(about.eval_task.ways)
    test = build.fixed_episodes(cfg, build.dataset(cfg).load(), split)
    target = resolve_device(device)
    episodes = [e.to(target) for e in test]
    models = [m.algorithm for m in members]
    chosen: Member | None = None
    scored = [*models, _fused(members, target)] if method == "fuse" else models
    results, combined = evaluate_together(scored, episodes, task_type, about.diverged_above,
                                          split.progress_label)
    member_results = results[:len(models)]
    if method == "fuse":  # the fused model's score, not the average's
        combined = results[-1]
    elif method == "select":
        chosen = _selected(members, task_type)
        combined = member_results[members.index(chosen)]
    digest = test.digest()  # hashes every episode's indices: once
    summary = {
        "command": EVAL, "status": COMPLETED, "method": method,
        "metric": task_type.metric, "higher_is_better": task_type.higher_is_better,
        "eval_task": vars(about.eval_task), "seed": about.seed, "split": split.value,
        "episodes_sha256": digest,
        **_scores(members, member_results, combined, chosen, task_type),
        "result": {**combined.as_dict(), "episodes_sha256": digest},
        "device": str(target), "seconds": round(time.perf_counter() - t0, 2),
    }
    write_summary(output_dir, summary)
    log.info("%s ensemble of %d: %s %s (95%% CI, %d episodes)", method, len(members),
             task_type.metric, task_type.format(combined.score, combined.ci95),
             combined.episodes)
    return summary
