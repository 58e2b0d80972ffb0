"""Meta-testing on a fixed set of episodes: the mean metric and its 95% confidence interval."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from metarun.algorithms.base import Algorithm
from metarun.types import Episode, EvalResult


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% CI (``1.96 * s / sqrt(n)``)."""
    n = len(values)
    if n == 0:
        raise ValueError("cannot summarise zero episodes")
    mean = sum(values) / n
    if n == 1:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(var / n)


def evaluate(algorithm: Algorithm, episodes: Iterable[Episode]) -> EvalResult:
    """Adapt to and score every episode; episodes must already be on the model's device."""
    scores, losses = [], []
    with torch.no_grad():  # adaptation that needs gradients enables them itself
        for episode in episodes:
            loss, score = algorithm.evaluate(episode)
            losses.append(loss)
            scores.append(score)
    return summarise(scores, losses, algorithm.task_type.metric)


def summarise(scores: list[float], losses: list[float], metric: str) -> EvalResult:
    """Per-episode scores and losses to their mean, its 95% CI and the mean loss."""
    score, ci95 = mean_ci95(scores)
    return EvalResult(score=score, ci95=ci95, loss=sum(losses) / len(losses),
                      episodes=len(scores), metric=metric)
