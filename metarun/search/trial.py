"""A search trial's side: its run reports each validation to its Optuna trial
(``trial.report``) and stops when the study's pruner says so (``trial.should_prune``).

The training command builds a :class:`TrialReporter` for a job that metarun's Optuna search
launched (:func:`reporter`): the job's number is its trial's, and the job's Hydra config names
the study, its storage and its pruner, so this works the same in the sweeping process and in
joblib's or submitit's workers. A data-parallel trial (``dist.nproc``) hands the same to its
processes in ``$METARUN_TRIAL`` (:func:`handed_to_ranks`); its rank 0 reports. A study that
cannot be reached is a warning: the run goes on, unpruned.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarun import studies

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

log = logging.getLogger("metarun")

#: ``hydra.sweeper._target_`` of metarun's Optuna sweeper.
SWEEPER = "hydra_plugins.metarun_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def live_trial(study: optuna.Study, storage: BaseStorage, number: int) -> optuna.trial.Trial:
    """Trial ``number`` of ``study``, to report to and tell from any process."""
    import optuna

    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(
        study_id, number))


class TrialReporter:
    """``reporter(step, value)``: report a validation value; whether to stop (prune) now."""

    def __init__(self, trial: optuna.trial.Trial) -> None:
        self.trial: optuna.trial.Trial | None = trial

    def __call__(self, step: int, value: float) -> bool:
        if self.trial is None:
            return False
        try:
            self.trial.report(value, step)  # a NaN too: pruners prune a trial that diverged
            return bool(self.trial.should_prune())
        except Exception as e:  # noqa: BLE001 - a storage error must not fail the run
            log.warning("trial %d: could not report to its study (%s: %s); the run goes on "
                        "unpruned", self.trial.number, type(e).__name__, e)
            self.trial = None
            return False


#: How ``metarun dist.nproc=N`` hands its trial to the processes it starts (JSON).
TRIAL_ENV = "METARUN_TRIAL"


def trial_of(hydra_cfg: Any) -> dict[str, Any] | None:
    """What opens the trial this job runs (``hydra_cfg``: the job's ``HydraConfig``): its
    study, storage, pruner and number, as plain values; ``None`` when it is not a trial of a
    single-objective metarun search (Optuna prunes single-objective studies only). A job
    that is not a sweep's takes its launcher's, from ``$METARUN_TRIAL``."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    sweeper = hydra_cfg.sweeper
    if hydra_cfg.mode != RunMode.MULTIRUN:
        handed = os.environ.get(TRIAL_ENV)
        return json.loads(handed) if handed else None
    if sweeper.get("_target_") != SWEEPER or len(sweeper.get("objectives", [])) != 1:
        return None
    return {"storage": sweeper.storage, "study_name": sweeper.study_name,
            "pruner": OmegaConf.to_container(sweeper.pruner, resolve=True),
            "number": int(hydra_cfg.job.num), "sweep_dir": str(hydra_cfg.sweep.dir),
            "cwd": str(hydra_cfg.runtime.cwd)}


def handed_to_ranks(trial: dict[str, Any] | None) -> dict[str, str]:
    """The environment that hands ``trial`` to the processes a launcher starts."""
    return {} if trial is None else {TRIAL_ENV: json.dumps(trial)}


def reporter(trial: dict[str, Any] | None, output_dir: str | Path) -> TrialReporter | None:
    """The reporter of ``trial`` (:func:`trial_of`), whose run is in ``output_dir``; ``None``
    without a trial, or (with a warning) when its study cannot be opened."""
    if trial is None:
        return None
    number = int(trial["number"])
    try:
        import optuna
        from hydra.utils import instantiate

        storage = studies.open_storage(trial["storage"], trial["sweep_dir"], trial["cwd"])
        study = optuna.load_study(study_name=trial["study_name"], storage=storage,
                                  pruner=instantiate(trial["pruner"]))
        live = live_trial(study, storage, number)
        live.set_user_attr(studies.RUN_DIR, str(Path(output_dir).resolve()))
    except Exception as e:  # noqa: BLE001 - whatever the storage raises
        log.warning("trial %d: could not open its study (%s: %s); the run goes on unpruned",
                    number, type(e).__name__, e)
        return None
    return TrialReporter(live)
