"""The report of an Optuna study (``metarun-report`` on a search's sweep directory, or
``--study STORAGE``): its best trial or Pareto front, every trial, the importance of each
parameter where Optuna can compute it, and Optuna's plots of the optimisation history, the
importances and each parameter against the objective.

Writes ``study.md``, ``study_trials.csv`` and ``study_history.png``, ``study_importance.png``,
``study_slice.png`` (each plot where the study has what it needs). Needs the ``sweep`` extra.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metarun.studies import open_storage

log = logging.getLogger("metarun")

#: What a search writes into its sweep directory (metarun.search.sweeper).
RESULTS = "optimization_results.yaml"


def study_of_sweep(sweep_dir: Path) -> tuple[str, str] | None:
    """The storage and study name of the search that ran in ``sweep_dir``, if one did."""
    import yaml

    try:
        results = yaml.safe_load((sweep_dir / RESULTS).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(results, dict) or not {"storage", "study_name"} <= results.keys():
        return None
    return str(results["storage"]), str(results["study_name"])


@dataclass
class StudyReport:
    """What a study holds, as the report shows it."""

    name: str
    storage: str
    objectives: list[str]
    directions: list[str]
    trials: list[dict[str, Any]]
    best: list[dict[str, Any]]
    importance: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def read_study(storage: str, name: str | None = None) -> tuple[Any, StudyReport]:
    """The study (``name``: needed when the storage holds several) and its report.

    Raises:
        ValueError: no such study, or several and no ``name``.
    """
    import optuna

    opened = open_storage(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(opened)]
    if name is None:
        if len(names) != 1:
            raise ValueError(f"{storage} holds {len(names)} studies ({', '.join(names)}): "
                             "name one with --study-name")
        name = names[0]
    if name not in names:
        raise ValueError(f"{storage} holds no study {name} (it holds: "
                         f"{', '.join(names) or 'none'})")
    study = optuna.load_study(study_name=name, storage=opened)
    objectives = study.metric_names or (["score"] if len(study.directions) == 1 else
                                        [f"objective {i}" for i in range(len(study.directions))])
    rows = [_trial_row(t, objectives) for t in study.get_trials(deepcopy=False)]
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best = [_trial_row(t, objectives) for t in (study.best_trials if done else [])]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    report = StudyReport(name, storage, list(objectives),
                         [d.name.lower() for d in study.directions], rows, best,
                         _importance(study, len(done)), counts)
    return study, report


def _trial_row(trial: Any, objectives: list[str]) -> dict[str, Any]:
    values = trial.values or [math.nan] * len(objectives)
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {"trial": trial.number, "state": trial.state.name.lower(),
            **dict(zip(objectives, values, strict=True)),
            **{f"param {k}": v for k, v in trial.params.items()},
            "test": trial.user_attrs.get("test"), "trial_seconds": duration,
            "run_dir": trial.user_attrs.get("run_dir")}


def _importance(study: Any, completed: int) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) of the first objective; empty when the study
    has too few completed trials or nothing that varies."""
    import optuna

    if completed < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importance = optuna.importance.get_param_importances(
                study, target=(lambda t: t.values[0]) if len(study.directions) > 1 else None)
    except (ValueError, RuntimeError) as e:  # a single distinct value, a dynamic space
        log.info("no parameter importances for the study %s: %s", study.study_name, e)
        return {}
    return {k: float(v) for k, v in importance.items()}


def write_study(study: Any, report: StudyReport, out: Path) -> dict[str, Path]:
    """``study.md``, ``study_trials.csv`` and the plots; return what was written."""
    from metarun.report.table import markdown_table, write_csv

    out.mkdir(parents=True, exist_ok=True)
    written = {"study": out / "study.md", "trials": out / "study_trials.csv"}
    write_csv(written["trials"], report.trials)
    written.update(_plots(study, report, out))
    lines = [f"# Optuna study {report.name}\n\n", f"Storage: `{report.storage}`. Objectives: ",
             ", ".join(f"{o} ({d})" for o, d in zip(report.objectives, report.directions,
                                                     strict=True)),
             ". Trials: ", ", ".join(f"{n} {s}" for s, n in sorted(report.counts.items())),
             f". Watch it with `optuna-dashboard {report.storage}`.\n\n"]
    if report.best:
        title = "Best trial" if len(report.directions) == 1 else "Pareto-optimal trials"
        lines += [f"## {title}\n\n", markdown_table(*_table(report.best)), "\n"]
    if report.importance:
        lines += ["## Parameter importance (fANOVA)\n\n", markdown_table(
            ["parameter", "importance"],
            [[k, f"{v:.3f}"] for k, v in report.importance.items()]), "\n"]
    lines += [f"![{key}]({path.name})\n\n" for key, path in written.items()
              if path.suffix == ".png"]
    lines.append(f"Every trial is in `{written['trials'].name}`.\n")
    written["study"].write_text("".join(lines), encoding="utf-8")
    return written


def _table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = [k for k in rows[0] if k != "run_dir"]
    return header, [[f"{r[k]:.6g}" if isinstance(r[k], float) else str(r[k]) for k in header]
                    for r in rows]


def _plots(study: Any, report: StudyReport, out: Path) -> dict[str, Path]:
    """Optuna's matplotlib plots, each where the study has what it needs; a plot that fails
    is a warning, never the report's error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as views

    target: dict[str, Any] = {}
    if len(report.directions) > 1:
        target = {"target": lambda t: t.values[0], "target_name": report.objectives[0]}
    wanted: dict[str, Callable[..., Any]] = {"history": views.plot_optimization_history,
                                             "slice": views.plot_slice}
    if report.importance:
        wanted["importance"] = views.plot_param_importances
    written = {}
    for name, plot in wanted.items():
        path = out / f"study_{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib views experimental
                axes = plot(study, **target)
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(figure)
            written[name] = path
        except Exception as e:  # noqa: BLE001 - whatever matplotlib or Optuna raises
            log.warning("could not draw %s: %s", path, e)
    return written


def study_lines(report: StudyReport) -> list[str]:
    """What the console shows of a study: its trials, its best, its importances."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report.counts.items()))
    lines = [f"Optuna study {report.name} ({report.storage}): {counts}"]
    for best in report.best[:5]:
        values = ", ".join(f"{o} {best[o]:.6g}" for o in report.objectives)
        params = ", ".join(f"{k[6:]}={v:.6g}" if isinstance(v, float) else f"{k[6:]}={v}"
                           for k, v in best.items() if k.startswith("param "))
        lines.append(f"  best: trial {best['trial']}: {values} with {params}")
    if report.importance:
        lines.append("  importance: " + ", ".join(f"{k} {v:.2f}"
                                                  for k, v in report.importance.items()))
    return lines


def report_study(storage: str, name: str | None, out: Path) -> dict[str, Path]:
    """Read, print and write the report of a study (see the module docstring)."""
    study, report = read_study(storage, name)
    print("\n".join(study_lines(report)))
    return write_study(study, report, out)
