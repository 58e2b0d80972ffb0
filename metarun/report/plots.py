"""PNG plots: one run's learning curve, and a comparison of many runs.

Figures are drawn with matplotlib's object API on an Agg canvas, so nothing here touches the
global pyplot state or needs a display, and plotting from a training process or a test is safe.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metarun.tasktypes import BY_METRIC, TaskType

CURVE_FILE = "learning_curve.png"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a line cut short by a crash is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record and "split" in record:
            records.append(record)
    return records


def _task_type_of(records: list[dict[str, Any]]) -> TaskType | None:
    """The task type whose metric the records hold (``None``: only losses)."""
    for metric, task_type in BY_METRIC.items():
        if any(metric in r for r in records):
            return task_type
    return None


def _figure(width: float, height: float, panels: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, [figure.add_subplot(1, panels, i + 1) for i in range(panels)]


def plot_learning_curve(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw train and validation metric and loss against step from ``<run_dir>/metrics.jsonl``.

    The validation points carry their 95% CI as a band; the test result, when the run has one,
    is a marker at the step of the checkpoint it tested. Writes ``<run_dir>/learning_curve.png``
    unless ``out`` says otherwise, and returns the path.

    Raises:
        FileNotFoundError: the run has no ``metrics.jsonl``.
        ValueError: it holds no training or validation points yet.
    """
    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.jsonl"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl to plot")
    records = read_metrics(metrics_file)
    if not any(r["split"] in ("train", "val") for r in records):
        raise ValueError(f"{metrics_file} holds no training or validation points yet")
    task_type = _task_type_of(records)
    metric = task_type.metric if task_type else "loss"
    scale = 100.0 if task_type and task_type.percent else 1.0
    label = task_type.label if task_type else metric

    figure, (left, right) = _figure(10, 4, panels=2)
    colours = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}
    for split in ("train", "val"):
        points = [r for r in records if r["split"] == split and metric in r]
        if not points:
            continue
        steps = [r["step"] for r in points]
        values = [scale * float(r[metric]) for r in points]
        left.plot(steps, values, marker="." if split == "val" else None,
                  color=colours[split], label=split)
        ci = [scale * float(r.get("ci95") or 0.0) for r in points]
        if split == "val" and any(math.isfinite(c) and c > 0 for c in ci):
            left.fill_between(steps, [v - c for v, c in zip(values, ci, strict=True)],
                              [v + c for v, c in zip(values, ci, strict=True)],
                              color=colours[split], alpha=0.2, linewidth=0)
        right.plot(steps, [float(r["loss"]) for r in points], color=colours[split],
                   marker="." if split == "val" else None, label=split)
    for r in records:
        if r["split"] == "test" and metric in r:
            left.errorbar([r["step"]], [scale * float(r[metric])],
                          yerr=[scale * float(r.get("ci95") or 0.0)], fmt="*",
                          markersize=10, color=colours["test"], label="test (best checkpoint)")
    left.set(xlabel="meta-update", ylabel=label, title=f"{metric} (val: 95% CI band)")
    right.set(xlabel="meta-update", ylabel="loss", title="loss")
    if task_type is not None and task_type.log_axis:
        left.set_yscale("log")
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle("/".join(run_dir.resolve().parts[-2:]))
    target = Path(out) if out is not None else run_dir / CURVE_FILE
    figure.savefig(target)
    return target


@dataclass(frozen=True)
class Series:
    """One line of a comparison plot: ``(x, mean, spread)`` points and their label."""

    label: str
    points: Sequence[tuple[Any, float, float]]


def plot_comparison(series: Sequence[Series], x_label: str, y_label: str, out: str | Path,
                    title: str = "", percent: bool = False) -> Path:
    """Draw each series as a line with error bars (numeric x) or as grouped bars (otherwise)."""
    scale = 100.0 if percent else 1.0
    figure, (axes,) = _figure(7, 4.5)
    xs = [x for s in series for x, _, _ in s.points]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    if numeric:
        for s in series:
            pts = sorted(s.points, key=lambda p: float(p[0]))
            axes.errorbar([p[0] for p in pts], [scale * p[1] for p in pts],
                          yerr=[scale * (p[2] if math.isfinite(p[2]) else 0.0) for p in pts],
                          marker="o", capsize=4, label=s.label)
        ticks = sorted({float(x) for x in xs})
        axes.set_xticks(ticks, [f"{t:g}" for t in ticks])
    else:
        categories = list(dict.fromkeys(str(x) for x in xs))
        width = 0.8 / max(len(series), 1)
        for i, s in enumerate(series):
            by_x = {str(x): (m, sp) for x, m, sp in s.points}
            positions = [c + i * width for c, name in enumerate(categories) if name in by_x]
            kept = [by_x[name] for name in categories if name in by_x]
            axes.bar(positions, [scale * m for m, _ in kept], width=width,
                     yerr=[scale * (sp if math.isfinite(sp) else 0.0) for _, sp in kept],
                     capsize=4, label=s.label)
        axes.set_xticks([c + width * (len(series) - 1) / 2 for c in range(len(categories))],
                        categories)
    axes.set(xlabel=x_label, ylabel=y_label, title=title)
    axes.grid(alpha=0.3)
    if len(series) > 1 or series and series[0].label:
        axes.legend()
    target = Path(out)
    figure.savefig(target)
    return target
