"""The configs of ``hydra/sweeper=optuna`` and the plugin class Hydra instantiates.

The search itself is :class:`metarun.search.sweeper.Search`, imported when a search starts:
Hydra imports every plugin module whenever it starts, and this one must stay cheap and must
import without optuna (the ``sweep`` extra).

Options (docs/sweeps.md): ``hydra/sweeper/sampler`` (tpe, random, cmaes, nsgaii, grid) and
``hydra/sweeper/pruner`` (none, median, successive_halving, hyperband); each node's keys are
those of the Optuna class it names, and any other argument of that class can be added with
``+hydra.sweeper.sampler.<name>=...``.
"""

# No "from __future__ import annotations": Hydra runs this module before it is in
# sys.modules, where dataclasses would look up string annotations.
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig

# Samplers are partial: the search makes one when it knows the study (the grid's points; a
# continued study's seed, offset by the trials it holds, so it does not draw them again).
SAMPLERS: dict[str, dict[str, Any]] = {
    # constant_liar=true: parallel trials (n_jobs > 1) do not all sample the same point
    "tpe": {"_target_": "optuna.samplers.TPESampler", "_partial_": True, "seed": None,
            "n_startup_trials": 10, "multivariate": False, "constant_liar": False},
    "random": {"_target_": "optuna.samplers.RandomSampler", "_partial_": True, "seed": None},
    "cmaes": {"_target_": "optuna.samplers.CmaEsSampler", "_partial_": True, "seed": None,
              "n_startup_trials": 1},
    "nsgaii": {"_target_": "optuna.samplers.NSGAIISampler", "_partial_": True, "seed": None,
               "population_size": 50},
    # its points are every combination of the searched keys (each a choice or a range)
    "grid": {"_target_": "optuna.samplers.GridSampler", "_partial_": True, "seed": None},
}
PRUNERS: dict[str, dict[str, Any]] = {
    "none": {"_target_": "optuna.pruners.NopPruner"},
    "median": {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5,
               "n_warmup_steps": 0, "interval_steps": 1, "n_min_trials": 1},
    # resources are training steps: min_resource is the first step a trial may be cut at
    "successive_halving": {"_target_": "optuna.pruners.SuccessiveHalvingPruner",
                           "min_resource": "auto", "reduction_factor": 4,
                           "min_early_stopping_rate": 0},
    "hyperband": {"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 1,
                  "max_resource": "auto", "reduction_factor": 3},
}


@dataclass
class OptunaSweeperConf:
    """``hydra.sweeper`` of ``hydra/sweeper=optuna``."""

    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"},
                                                         {"pruner": "none"}])
    _target_: str = "hydra_plugins.metarun_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    sampler: Any = MISSING
    pruner: Any = MISSING
    #: of the ``score`` objective: the dataset's task type's (accuracy up, MSE down)
    direction: str = "${metarun.direction:${data._target_}}"
    #: what each trial returns: score, seconds, train_seconds (several: multi-objective)
    objectives: list[str] = field(default_factory=lambda: ["score"])
    #: a database URL, a journal file, or None: <sweep dir>/optuna.journal
    storage: Optional[str] = None  # noqa: UP045 - OmegaConf reads the annotation
    study_name: str = "metarun"
    #: finished trials the study should hold (those of earlier runs of the command count)
    n_trials: int = 20
    #: trials launched together (with hydra/launcher=joblib, in parallel)
    n_jobs: int = 1
    #: the search space, in Hydra's sweep syntax (key: "interval(0.01, 1.0)")
    params: Optional[dict[str, Any]] = None  # noqa: UP045


class OptunaSweeper(Sweeper):
    """Hydra's handle on :class:`metarun.search.sweeper.Search`."""

    def __init__(self, **kwargs: Any) -> None:
        from metarun.search.sweeper import Search

        self.search = Search(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function,
                          config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.search.sweep(arguments)


_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="metarun")
for _name, _node in SAMPLERS.items():
    _store.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="metarun")
for _name, _node in PRUNERS.items():
    _store.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="metarun")
