"""Sweeps: the report written when a multirun ends, and what Optuna searches optimise.

:class:`SweepReport` is a Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``). When
every job of a ``metarun -m`` sweep has ended it reads the jobs' run directories, so it sees
the same thing whichever launcher ran them (in this process, or joblib's worker processes):
it prints the sweep's table, writes ``report.csv``, ``report.md`` (and, across seeds,
``groups.csv``) and ``comparison.png`` into the sweep directory, and records the jobs that did
not complete so that ``metarun`` exits non-zero.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("metarun")

#: Jobs of the last sweep that did not complete: job directory -> ``"<status>: <error>"``.
#: Filled by the jobs run in this process (metarun.cli.common.run_job) and, when a sweep ends, from
#: the job directories (so jobs of other processes, such as joblib's workers, count too).
FAILED_JOBS: dict[str, str] = {}


def direction(dataset_target: str) -> str:
    """``maximize`` or ``minimize``: the direction in which the validation metric of the
    dataset's task type improves (accuracy up, MSE down). An Optuna search's
    ``hydra.sweeper.direction`` is ``${metarun.direction:${data._target_}}``."""
    from hydra.utils import get_class

    task_type = getattr(get_class(dataset_target), "task_type", None)
    if task_type is None:
        raise ValueError(f"{dataset_target} declares no task_type")
    return "maximize" if task_type.higher_is_better else "minimize"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("metarun.direction"):
        OmegaConf.register_new_resolver("metarun.direction", direction)


class SweepReport(Callback):
    """Report a finished sweep from its job directories (see the module docstring).

    Args:
        enabled: write and print the report (failed jobs are always recorded).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            from metarun.report.runs import find_runs

            runs = find_runs([sweep_dir]) if sweep_dir.is_dir() else []
        except OSError as e:
            log.warning("could not read the sweep's runs in %s: %s", sweep_dir, e)
            return
        for r in runs:
            if r.failed:  # a pruned trial ended as its search meant
                FAILED_JOBS.setdefault(str(r.path), r.status + (f": {r.error}" if r.error
                                                                else ""))
        if not self.enabled or not runs:
            return
        from metarun.report.output import print_report, write_report
        from metarun.report.table import build_report

        try:
            report = build_report(runs, root=sweep_dir.resolve())
            print_report(report, f"sweep {sweep_dir}: {len(report.rows)} runs")
            written = write_report(report, sweep_dir)
            log.info("sweep report: %s", ", ".join(str(p) for p in written.values()))
        except Exception as e:  # noqa: BLE001 - a report must never fail the sweep
            log.warning("could not write the sweep report in %s: %s", sweep_dir, e)
        self._study(sweep_dir)

    @staticmethod
    def _study(sweep_dir: Path) -> None:
        """An Optuna search's study report, beside the sweep's."""
        from metarun.report.study import report_study, study_of_sweep

        found = study_of_sweep(sweep_dir)
        if found is None:
            return
        try:
            written = report_study(*found, sweep_dir)
            log.info("study report: %s", ", ".join(str(p) for p in written.values()))
        except Exception as e:  # noqa: BLE001 - a report must never fail the sweep
            log.warning("could not write the study report in %s: %s", sweep_dir, e)
