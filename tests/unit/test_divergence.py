"""One exploding task cannot hide in a mean: test results carry the median and the count of
diverged episodes (a non-finite loss, or one above the stated bound)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from metarun.engine.evaluate import DIVERGED_FACTOR, evaluate, summarise
from metarun.tasktypes import CLASSIFICATION, REGRESSION


def test_the_median_and_the_diverged_count_see_what_the_mean_hides() -> None:
    losses = [0.1, 0.2, 0.3, 1e6, math.inf]
    result = summarise(losses, losses, "mse", diverged_above=100.0)
    assert result.score == math.inf  # the mean is ruined by one task
    assert (result.median, result.diverged, result.diverged_above) == (0.3, 2, 100.0)
    assert summarise([0.5, math.nan], [1.0, math.nan], "mse", 10.0).diverged == 1
    assert summarise([0.5, 0.6], [1.0, 2.0], "mse").diverged == 0  # no bound: finite is fine


class _Fixed:
    """An algorithm whose per-episode (loss, score) is given."""

    def __init__(self, task_type, results) -> None:  # type: ignore[no-untyped-def]
        self.task_type, self.results = task_type, iter(results)

    def evaluate(self, episode):  # type: ignore[no-untyped-def]
        return next(self.results)


def test_the_default_bound_is_ten_times_a_constant_prediction() -> None:
    # Regression: the query targets' variance (here 1.0 and 4.0: a mean of 2.5).
    targets = [torch.tensor([[-1.0], [1.0]]), torch.tensor([[-2.0], [2.0]])]
    episodes = [SimpleNamespace(query_y=t) for t in targets]
    result = evaluate(_Fixed(REGRESSION, [(24.0, 24.0), (26.0, 26.0)]), episodes)
    assert result.diverged_above == pytest.approx(DIVERGED_FACTOR * 2.5)
    assert result.diverged == 1
    stated = evaluate(_Fixed(REGRESSION, [(24.0, 24.0), (26.0, 26.0)]), episodes, 30.0)
    assert (stated.diverged_above, stated.diverged) == (30.0, 0)
    # Classification: a uniform guess over 5 classes, ln 5.
    labels = [SimpleNamespace(query_y=torch.arange(5).repeat(3))] * 3
    result = evaluate(_Fixed(CLASSIFICATION, [(1.0, 0.8), (17.0, 0.2), (math.nan, 0.0)]),
                      labels)
    assert result.diverged_above == pytest.approx(10 * math.log(5))
    assert (result.diverged, result.median) == (2, 0.2)
