"""metarun's Optuna search: what ``hydra/sweeper=optuna`` does (the Hydra plugin in
``hydra_plugins/metarun_optuna_sweeper`` registers the configs and hands over to
:class:`Search`).

Every trial is one training run in the sweep directory, ``<sweep dir>/<trial number>``, run
by Hydra's launcher (in this process, or in joblib's or submitit's workers). The study lives
in ``hydra.sweeper.storage`` (:mod:`metarun.studies`), so the same command run again after a
kill continues it: finished trials stay, a trial left running by a process that is gone is
run again in its own directory (where the run resumes from its last checkpoint) and told once,
and new trials are asked for until the study holds ``n_trials`` finished ones. What a trial
returns is read from its run's ``summary.json``: completed (its objectives), ``pruned``
(:mod:`metarun.search.trial` reported its validations), or anything else, failed.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, Trial, TrialState

from metarun import studies
from metarun.engine.lock import is_locked
from metarun.errors import ConfigError, exit_status
from metarun.jobs.resume import SAME_RUN_CHANGES
from metarun.search.space import grid, search_space
from metarun.search.trial import live_trial
from metarun.summary import COMPLETED, PRUNED, objective, read_summary

log = logging.getLogger("metarun")

#: What a trial can optimise (``hydra.sweeper.objectives``): its value in a completed run's
#: summary, and its direction (``None``: ``hydra.sweeper.direction``, the task type's).
OBJECTIVES: dict[str, tuple[Callable[[dict[str, Any]], float], str | None]] = {
    "score": (objective, None),  # the best validation accuracy or MSE
    "seconds": (lambda s: float(s["seconds"]), "minimize"),  # the whole run's
    "train_seconds": (lambda s: float(s["train_seconds_total"]), "minimize"),
}
#: Trials that count towards ``n_trials`` (with those other live processes are running).
_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


class Search:
    """The search a ``hydra.sweeper`` config describes (docs/sweeps.md has every key)."""

    def __init__(self, *, sampler: Any, pruner: Any, direction: str, objectives: Sequence[str],
                 storage: str | None, study_name: str, n_trials: int, n_jobs: int,
                 params: DictConfig | dict[str, Any] | None) -> None:
        unknown = [o for o in objectives if o not in OBJECTIVES]
        if unknown or not objectives:
            _refuse(ConfigError(f"hydra.sweeper.objectives = {list(objectives)}: each one of "
                                f"{', '.join(OBJECTIVES)}"))
        if direction not in ("maximize", "minimize"):
            _refuse(ConfigError(f"hydra.sweeper.direction = {direction}: maximize or minimize "
                                "(for several objectives, set hydra.sweeper.objectives)"))
        if len(objectives) > 1 and not isinstance(pruner, optuna.pruners.NopPruner):
            _refuse(ConfigError("Optuna prunes single-objective studies only: with several "
                                "hydra.sweeper.objectives use hydra/sweeper/pruner=none"))
        if n_trials < 1 or n_jobs < 1:
            _refuse(ConfigError(f"hydra.sweeper.n_trials = {n_trials} and n_jobs = {n_jobs}: "
                                "each at least 1"))
        self.sampler, self.pruner = sampler, pruner
        self.objectives = list(objectives)
        self.directions: list[Any] = [OBJECTIVES[o][1] or direction for o in self.objectives]
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.params: dict[str, Any] = {str(k): v for k, v in (params or {}).items()}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)
        self.cwd = str(config.hydra.runtime.cwd)
        self.sweep_dir = str((Path(self.cwd) / str(config.hydra.sweep.dir)).resolve())

    def sweep(self, arguments: list[str]) -> None:
        try:
            space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()]
                                        + list(arguments))
            study = self._study(space, fixed)
        except ValueError as e:
            _refuse(e)
        for trial in self._stale(study):
            log.info("trial %d was left running by a process that is gone: running it again "
                     "in %s", trial.number, trial.user_attrs.get(studies.RUN_DIR, "its directory"))
            self._run(study, [self._live(study, trial.number)], fixed, trial)
        while (left := self.n_trials - len(study.get_trials(False, states=_COUNTED))) > 0:
            self._run(study, [study.ask(space) for _ in range(min(self.n_jobs, left))], fixed)
        self._write_results(study)

    def _study(self, space: dict[str, Any], fixed: list[str]) -> optuna.Study:
        self.where = where = studies.storage_location(self.storage, self.sweep_dir, self.cwd)
        self._storage = studies.open_storage(self.storage, self.sweep_dir, self.cwd)
        self.sampler = self._sampler(space, where)
        study = optuna.create_study(
            storage=self._storage, sampler=self.sampler, pruner=self.pruner,
            study_name=self.study_name, directions=self.directions, load_if_exists=True)
        command = {"overrides": sorted(o for o in fixed if not _same_run(o)),
                   "space": {k: str(d) for k, d in sorted(space.items())},
                   "objectives": self.objectives}
        before = study.user_attrs.get(studies.COMMAND)
        if before is None:
            study.set_user_attr(studies.COMMAND, command)
            if len(self.objectives) > 1:
                study.set_metric_names(self.objectives)
        elif before != command:
            differ = sorted(k for k in command if command[k] != before.get(k))
            raise ConfigError(
                f"the study {self.study_name} in {where} was started by another search (its "
                f"{' and '.join(differ)} differ: {before}); run that command again to go on, or "
                "choose another hydra.sweeper.study_name")
        done = len(study.get_trials(False, states=_COUNTED[:3]))
        log.info("Optuna study %s in %s: %d of %d trials finished; directions %s; sampler %s, "
                 "pruner %s", self.study_name, where, done, self.n_trials, self.directions,
                 type(self.sampler).__name__, type(self.pruner).__name__)
        return study

    def _sampler(self, space: dict[str, Any], where: str) -> optuna.samplers.BaseSampler:
        """The sampler, made for this study: the grid gets its points; a seeded sampler that
        continues a study gets ``seed + trials in the study`` (the same seed would draw the
        points of the study's first trials again), so a continued search is reproducible
        for the same point of interruption, though not the uninterrupted one's draw for draw."""
        if not isinstance(self.sampler, functools.partial):
            return self.sampler  # made already (a custom sampler config without _partial_)
        kwargs: dict[str, Any] = {}
        if self.sampler.func is optuna.samplers.GridSampler:  # its points, once each
            kwargs["search_space"] = points = grid(space)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in points.values()))
        try:
            held = len(self._storage.get_all_trials(
                self._storage.get_study_id_from_name(self.study_name), deepcopy=False))
        except KeyError:  # a new study
            held = 0
        seed = self.sampler.keywords.get("seed")
        if held and seed is not None:
            kwargs["seed"] = int(seed) + held
            log.info("continuing the study %s in %s (%d trials): sampler seed %d", self.study_name,
                     where, held, kwargs["seed"])
        return self.sampler(**kwargs)

    def _live(self, study: optuna.Study, number: int) -> Trial:
        """A trial of ``study`` by its number, to tell."""
        return live_trial(study, self._storage, number)

    def _stale(self, study: optuna.Study) -> Iterator[FrozenTrial]:
        """Trials a metarun search left running whose process and run are gone."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            attrs = trial.user_attrs
            if studies.SWEEP_DIR not in attrs:
                continue  # not one of metarun's
            host, _, pid = str(attrs.get(studies.SWEEPER, "")).rpartition(":")
            if host == socket.gethostname() and pid.isdigit() and _alive(int(pid)):
                continue
            run_dir = attrs.get(studies.RUN_DIR)
            if run_dir and is_locked(Path(run_dir)):
                continue
            yield trial

    def _run(self, study: optuna.Study, trials: list[Trial], fixed: list[str],
             stale: FrozenTrial | None = None) -> None:
        """Launch ``trials`` (numbers in a row are launched together) and tell their results."""
        for group in _in_a_row(trials):
            overrides = [self._overrides(t, fixed, stale) for t in group]
            returns = self.launcher.launch(overrides, initial_job_idx=group[0].number)
            for trial, ret in zip(group, returns, strict=True):
                self._record(study, trial, ret)

    def _overrides(self, trial: Trial, fixed: list[str], stale: FrozenTrial | None,
                   ) -> list[str]:
        if stale is not None:  # exactly what it ran with, where it ran
            overrides = list(stale.user_attrs.get(studies.OVERRIDES, []))
            sweep_dir = str(stale.user_attrs[studies.SWEEP_DIR])
        else:
            overrides = [f"{k}={v}" for k, v in trial.params.items()] + fixed
            sweep_dir = self.sweep_dir
            trial.set_user_attr(studies.OVERRIDES, overrides)
            trial.set_user_attr(studies.SWEEP_DIR, sweep_dir)
        trial.set_user_attr(studies.SWEEPER, f"{socket.gethostname()}:{os.getpid()}")
        return overrides + ([f"hydra.sweep.dir={sweep_dir}"] if sweep_dir != self.sweep_dir
                            else [])

    def _record(self, study: optuna.Study, trial: Trial, ret: JobReturn) -> None:
        assert ret.hydra_cfg is not None  # every launcher's job return has it
        out = Path(str(ret.hydra_cfg.hydra.runtime.output_dir))
        summary = read_summary(out) or {}
        trial.set_user_attr(studies.RUN_DIR, str(out))
        status = summary.get("status")
        if status == COMPLETED:
            values = [OBJECTIVES[o][0](summary) for o in self.objectives]
            test = summary.get("test", {}).get(summary.get("metric", ""))
            if test is not None:
                trial.set_user_attr("test", test)
            if all(math.isfinite(v) for v in values):
                _tell(study, trial, values=values)
                return
        if status == PRUNED:
            _tell(study, trial, state=TrialState.PRUNED)
            return
        log.warning("trial %d failed (%s): %s", trial.number, status or "no summary",
                    summary.get("error", f"see {out}"))
        _tell(study, trial, state=TrialState.FAIL)

    def _write_results(self, study: optuna.Study) -> None:
        """``optimization_results.yaml``: the best trial (or the Pareto front)."""
        counts = {s.name.lower(): len(study.get_trials(False, states=(s,)))
                  for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        results: dict[str, Any] = {"name": "optuna", "study_name": self.study_name,
                                   "storage": self.where, "trials": counts}
        best = study.best_trials if counts["complete"] else []
        if len(self.directions) == 1 and best:
            (trial,) = best[:1]
            results.update(best_params=trial.params, best_value=trial.value,
                           best_trial=trial.number,
                           best_run_dir=trial.user_attrs.get(studies.RUN_DIR))
            log.info("best trial %d: %s = %s with %s", trial.number, self.objectives[0],
                     trial.value, trial.params)
        elif best:
            results["solutions"] = [{"trial": t.number, "params": t.params, "values": t.values,
                                     "run_dir": t.user_attrs.get(studies.RUN_DIR)}
                                    for t in best]
            log.info("%d Pareto-optimal trials of %s", len(best), self.objectives)
        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results),
                       Path(self.sweep_dir) / "optimization_results.yaml")
        log.info("watch the study with: optuna-dashboard %s", self.where)


def _tell(study: optuna.Study, trial: Trial, **result: Any) -> None:
    """``study.tell``. The grid sampler stops the study when its last point is told, which
    Optuna allows only inside ``study.optimize``: the trial is recorded all the same (Optuna
    writes it in a ``finally``), and this search stops by counting its trials."""
    try:
        study.tell(trial, **result)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def _in_a_row(trials: list[Trial]) -> Iterator[list[Trial]]:
    """``trials`` in groups of consecutive numbers (each group is one launch, its job numbers
    the trials')."""
    group: list[Trial] = []
    for trial in trials:
        if group and trial.number != group[-1].number + 1:
            yield group
            group = []
        group.append(trial)
    if group:
        yield group


def _same_run(override: str) -> bool:
    """Whether an override may change between the runs of one search (where things are)."""
    key = override.lstrip("+~").split("=", 1)[0]
    return any(key == p.rstrip(".") or key.startswith(p) for p in SAME_RUN_CHANGES)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _refuse(error: Exception) -> NoReturn:
    """A search that cannot start: one error line and the status of bad input (Hydra would
    print the exception and exit 1)."""
    print(f"metarun: error: {error}", file=sys.stderr)
    sys.exit(exit_status(error) or 2)
