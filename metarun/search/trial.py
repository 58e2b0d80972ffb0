"""A search trial's side: its run reports each validation to its Optuna trial
(``trial.report``) and stops when the study's pruner says so (``trial.should_prune``).

The training command builds a :class:`TrialReporter` for a job that metarun's Optuna search
launched (:func:`reporter`): the job's number is its trial's, and the job's Hydra config names
the study, its storage and its pruner, so this works the same in the sweeping process and in
joblib's or submitit's workers. A study that cannot be reached is a warning: the run goes on,
unpruned.
"""

from __future__ import annotations

import logging
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


def reporter(hydra_cfg: Any, output_dir: str | Path) -> TrialReporter | None:
    """The reporter of the trial this job runs (``hydra_cfg``: the job's ``HydraConfig``), or
    ``None`` when it is not a trial of a single-objective metarun search (Optuna prunes
    single-objective studies only)."""
    from hydra.types import RunMode

    sweeper = hydra_cfg.sweeper
    if hydra_cfg.mode != RunMode.MULTIRUN or sweeper.get("_target_") != SWEEPER \
            or len(sweeper.get("objectives", [])) != 1:
        return None
    number = int(hydra_cfg.job.num)
    try:
        import optuna
        from hydra.utils import instantiate

        storage = studies.open_storage(sweeper.storage, str(hydra_cfg.sweep.dir),
                                       str(hydra_cfg.runtime.cwd))
        study = optuna.load_study(study_name=sweeper.study_name, storage=storage,
                                  pruner=instantiate(sweeper.pruner))
        trial = live_trial(study, storage, number)
        trial.set_user_attr(studies.RUN_DIR, str(Path(output_dir).resolve()))
    except Exception as e:  # noqa: BLE001 - whatever the storage raises
        log.warning("trial %d: could not open its study (%s: %s); the run goes on unpruned",
                    number, type(e).__name__, e)
        return None
    return TrialReporter(trial)
