"""The search space of metarun's Optuna sweeper, read from Hydra's sweep syntax."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")  # the sweep extra
from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from metarun.search.space import grid, search_space  # noqa: E402
from metarun.studies import DEFAULT_JOURNAL, storage_location  # noqa: E402


def test_each_sweep_becomes_its_distribution_and_the_rest_stays_fixed() -> None:
    space, fixed = search_space([
        "a=tag(log, interval(1e-4, 1e-2))", "b=interval(0, 10)", "c=range(1, 5)",
        "d=range(0.1, 0.5, 0.1)", "e=choice(running, batch)", "f=1,2", "data=sinusoid"])
    assert space["a"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["b"] == FloatDistribution(0.0, 10.0)  # Hydra's interval is of floats
    assert space["c"] == IntDistribution(1, 4)  # Hydra's range excludes its stop
    assert space["d"] == FloatDistribution(0.1, 0.4, step=0.1)
    assert space["e"] == CategoricalDistribution(["running", "batch"])
    assert space["f"] == CategoricalDistribution([1, 2])
    assert fixed == ["data=sinusoid"]


def test_a_key_given_again_on_the_command_line_wins() -> None:
    space, fixed = search_space(["optim.lr=tag(log, interval(1e-4, 1e-2))", "x=choice(1, 2)",
                                 "optim.lr=0.01", "x=range(3, 5)"])
    assert fixed == ["optim.lr=0.01"] and space == {"x": IntDistribution(3, 4)}


def test_an_empty_range_is_refused() -> None:
    with pytest.raises(ValueError, match="the range is empty"):
        search_space(["a=range(5, 1)"])


def test_the_grid_lists_every_point_and_refuses_intervals() -> None:
    space, _ = search_space(["c=range(1, 4)", "d=range(0.1, 0.4, 0.1)", "e=choice(x, y)"])
    assert grid(space) == {"c": [1, 2, 3], "d": [0.1, 0.2, 0.3], "e": ["x", "y"]}
    with pytest.raises(ValueError, match="a: hydra/sweeper/sampler=grid needs a choice"):
        grid(search_space(["a=interval(0.0, 1.0)"])[0])


def test_storage_names_are_a_url_a_journal_or_the_sweep_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert storage_location(None, "sweep", tmp_path) == str(tmp_path / "sweep" / DEFAULT_JOURNAL)
    assert storage_location("s.db", "sweep", tmp_path) == str(tmp_path / "s.db")
    # a relative SQLite path is the starting directory's, whatever the job's directory is
    assert storage_location("sqlite:///s.db", "x", tmp_path) == f"sqlite:///{tmp_path}/s.db"
    assert storage_location("sqlite:////abs/s.db", "x", tmp_path) == "sqlite:////abs/s.db"
    assert storage_location("postgresql://h/db", "x", tmp_path) == "postgresql://h/db"


def test_every_sampler_and_pruner_option_makes_its_optuna_object() -> None:
    from hydra.utils import instantiate

    from hydra_plugins.metarun_optuna_sweeper.optuna_sweeper import PRUNERS, SAMPLERS

    for name, node in SAMPLERS.items():
        kwargs = {"search_space": {"x": [1, 2]}} if name == "grid" else {}
        sampler = instantiate(node)(**kwargs)  # partial: the search finishes it
        assert isinstance(sampler, optuna.samplers.BaseSampler), name
        assert type(sampler).__name__ == node["_target_"].rsplit(".", 1)[1]
    for name, node in PRUNERS.items():
        pruner = instantiate(node)
        assert isinstance(pruner, optuna.pruners.BasePruner), name
        assert type(pruner).__name__ == node["_target_"].rsplit(".", 1)[1]
