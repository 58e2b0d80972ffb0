"""An evaluation: meta-test a saved checkpoint (or an ensemble of them) on fixed episodes.

    metarun-eval checkpoint=outputs/2026-11-24/10-00-00                  # the run's own test
    metarun-eval checkpoint=runs/a eval.ways=20 eval.test_episodes=1000  # trained 5-way
    metarun-eval checkpoint=runs/a data.split=lake split=val device=cpu
    metarun-eval checkpoint=[runs/a,runs/b,runs/c] ensemble=average
    metarun-eval -m checkpoint=runs/a eval.ways=5,20 eval.shots=1,5       # a Hydra sweep

Everything not overridden comes from the config saved in the checkpoint, so
``metarun-eval checkpoint=<run>`` meets exactly the run's own test episodes and reproduces its
test score. Each evaluation writes ``summary.json`` (and ``metarun-eval.log``) to its own
directory, ``outputs/eval/<date>/<time>`` unless ``hydra.run.dir`` says otherwise.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from metarun import build
from metarun.build import saved
from metarun.device import resolve_device
from metarun.engine.checkpoint import checkpoint_file, load_checkpoint
from metarun.engine.evaluate import evaluate
from metarun.jobs.rundir import claim, refuse_results
from metarun.summary import COMPLETED, EVAL, RunResult, write_summary
from metarun.types import Dataset, Split

log = logging.getLogger("metarun")


def job(cfg: DictConfig, output_dir: str | Path) -> RunResult:
    """One ``metarun-eval`` job in its own directory, which must hold no other job's results
    (checked before anything is written)."""
    request = saved.eval_request(cfg)
    refuse_results(output_dir, "hydra.run.dir")
    claim(output_dir, cfg)
    if request.method is None:
        summary = evaluate_checkpoint(request.checkpoints[0], output_dir, split=request.split,
                                      device=request.device, overrides=request.overrides)
    else:
        from metarun.jobs.ensemble import ensemble

        summary = ensemble(request.checkpoints, request.method, output_dir,
                           device=request.device, overrides=request.overrides,
                           split=request.split)
    return RunResult(summary, str(output_dir))


def split_algo_keys(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``overrides`` in two: those that change the algorithm (its meta-test settings, applied
    when the model is rebuilt), and the rest (the episodes', applied to that config)."""
    algo = {k: v for k, v in overrides.items() if k.startswith("algo.")}
    return algo, {k: v for k, v in overrides.items() if k not in algo}


def _check_inputs(path: Path, trained_on: Dataset, data: Dataset) -> None:
    """Refuse data whose inputs or task type differ from those the model was trained on."""
    if tuple(data.input_shape) != tuple(trained_on.input_shape) or \
            type(data.task_type) is not type(trained_on.task_type):
        raise ValueError(f"{path} was trained on {trained_on.task_type.name} inputs of shape "
                         f"{tuple(trained_on.input_shape)}; these data give "
                         f"{data.task_type.name} inputs of shape {tuple(data.input_shape)}")


def evaluate_checkpoint(checkpoint: str | Path, output_dir: str | Path, *,
                        split: str | Split = "test", device: str = "auto",
                        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Meta-test one checkpoint; write and return ``summary.json``.

    Args:
        checkpoint: a checkpoint file, or a run directory (its ``checkpoints/best.pt``).
        output_dir: where ``summary.json`` goes.
        split: ``train``, ``val`` or ``test``: whose classes the episodes come from.
        device: as for :func:`metarun.load`.
        overrides: run-config keys to change (``eval.ways``, ``eval.test_episodes``, ``seed``,
            ``data.<key>``, ``algo.<key>`` ...; each must exist in the run's config). Everything
            else is the run's. ``algo`` keys rebuild the model before its weights are loaded:
            ``algo.test_inner_steps=10`` adapts with 10 steps at meta-test.

    Raises:
        ValueError: the checkpoint cannot meet these episodes (another input shape or task
            type, more ways than it handles, more classes or images than the split has).
    """
    t0 = time.perf_counter()
    which = split if isinstance(split, Split) else Split.parse(split)
    path = checkpoint_file(checkpoint)
    blob = load_checkpoint(path, map_location="cpu")
    changes, rest = split_algo_keys(overrides or {})
    restored = saved.restore(blob, str(path), changes)
    target = resolve_device(device)
    algorithm = restored.algorithm.to(target).eval()
    cfg = saved.with_overrides(restored.config, rest)
    data = build.dataset(cfg)
    _check_inputs(path, restored.dataset, data)
    about = build.info(cfg)
    algorithm.check_task(about.eval_task.ways)
    episodes = build.fixed_episodes(cfg, build.splits(data, target), which)
    result = evaluate(algorithm, episodes, about.diverged_above, which.progress_label)
    task_type = algorithm.task_type
    summary: dict[str, Any] = {
        "command": EVAL,
        "status": COMPLETED,
        "checkpoint": str(path),
        "checkpoint_step": blob.get("step"),
        "algo": about.algo,
        "task_type": task_type.name,
        "metric": task_type.metric,
        "higher_is_better": task_type.higher_is_better,
        "split": which.value,
        "trained_task": vars(build.info(restored.config).task),
        "eval_task": vars(about.eval_task),
        "result": {**result.as_dict(), "episodes_sha256": episodes.digest()},
        "overrides": dict(overrides or {}),
        "seed": about.seed,
        "device": str(target),
        "bn_mode": algorithm.bn_mode,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_summary(output_dir, summary)
    log.info("%s %s %s (95%% CI, %d episodes, %s) of %s", which.value, task_type.metric,
             task_type.format(result.score, result.ci95), result.episodes,
             task_type.shape(about.eval_task.ways, about.eval_task.shots), path)
    return summary
