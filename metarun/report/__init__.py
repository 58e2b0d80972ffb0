"""Reading many runs at once: learning-curve plots, the ``metarun-report`` table and its
comparison plot."""

from metarun.report.plots import plot_learning_curve
from metarun.report.runs import RunRecord, find_runs
from metarun.report.table import Report, build_report

__all__ = ["Report", "RunRecord", "build_report", "find_runs", "plot_learning_curve"]
