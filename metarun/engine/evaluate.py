"""Meta-testing on a fixed set of episodes: the mean metric and its 95% confidence interval,
the median, and how many episodes diverged."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence, Sized

import torch

from metarun.algorithms.base import Algorithm
from metarun.engine.progress import EvalProgress
from metarun.tasktypes import TaskType
from metarun.types import Episode, EvalResult

#: An episode has diverged when its loss is not finite or above this many times the mean
#: loss of a constant prediction (a uniform guess; the query targets' mean), unless
#: ``eval.diverged_above`` states the bound.
DIVERGED_FACTOR = 10.0


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


def evaluate(algorithm: Algorithm, episodes: Iterable[Episode],
             diverged_above: float | None = None,
             progress: str | EvalProgress | None = None) -> EvalResult:
    """Adapt to and score every episode; episodes must already be on the model's device.

    ``diverged_above``: the loss above which an episode counts as diverged (``None``:
    :data:`DIVERGED_FACTOR` times a constant prediction's mean loss on these episodes).
    ``progress``: a label (``"meta-test"``) to report progress under, for ``episodes`` that
    know their number (:class:`~metarun.engine.progress.EvalProgress`), or a progress to
    report to; ``None``: silent.
    """
    return evaluate_each(lambda episode: [algorithm.evaluate(episode)], episodes,
                         algorithm.task_type, diverged_above, progress)[0]


def evaluate_each(score: Callable[[Episode], Sequence[tuple[float, float]]],
                  episodes: Iterable[Episode], task_type: TaskType,
                  diverged_above: float | None = None,
                  progress: str | EvalProgress | None = None) -> list[EvalResult]:
    """Score several predictors on the same episodes: ``score`` gives each one's (query loss,
    query metric) on an episode, and each gets its :class:`EvalResult`, with one divergence
    bound (as :func:`evaluate`'s) for all. Progress shows the last predictor's running mean
    (an ensemble's, after its members')."""
    columns: list[list[tuple[float, float]]] = []
    constant = []
    total = len(episodes) if isinstance(episodes, Sized) else 0
    report = progress if isinstance(progress, EvalProgress) \
        else EvalProgress(progress, total, task_type)
    # adaptation that needs gradients enables them itself
    with torch.no_grad(), report:
        for episode in episodes:
            row = score(episode)
            columns = columns or [[] for _ in row]
            for column, pair in zip(columns, row, strict=True):
                column.append(pair)
            constant.append(task_type.constant_loss(episode.query_y))
            report.update(row[-1][1])
    if not columns:
        raise ValueError("cannot summarise zero episodes")
    bound = divergence_bound(constant, diverged_above)
    return [summarise([s for _, s in column], [loss for loss, _ in column], task_type.metric,
                      bound) for column in columns]


def divergence_bound(constant_losses: list[float], stated: float | None = None) -> float:
    """``stated``, else :data:`DIVERGED_FACTOR` times the mean of ``constant_losses``."""
    if stated is not None:
        return float(stated)
    return DIVERGED_FACTOR * statistics.fmean(constant_losses)


def summarise(scores: list[float], losses: list[float], metric: str,
              diverged_above: float | None = None) -> EvalResult:
    """Per-episode scores and losses to their mean, its 95% CI, the median score, the mean
    loss, and the count of losses that are not finite or above ``diverged_above``."""
    score, ci95 = mean_ci95(scores)
    bound = math.inf if diverged_above is None else diverged_above
    diverged = sum(1 for v in losses if not math.isfinite(v) or v > bound)
    finite = [v for v in scores if not math.isnan(v)]
    return EvalResult(score=score, ci95=ci95, loss=sum(losses) / len(losses),
                      episodes=len(scores), metric=metric,
                      median=statistics.median(finite) if finite else math.nan,
                      diverged=diverged, diverged_above=diverged_above)
