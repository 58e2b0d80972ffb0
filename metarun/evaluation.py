"""``metarun-eval``: meta-test saved checkpoints on any compatible episodes.

    metarun-eval checkpoint=outputs/2026-11-24/10-00-00                 # the run's own test
    metarun-eval checkpoint=runs/a eval.ways=20 eval.episodes=1000      # trained 5-way
    metarun-eval checkpoint=runs/a data.split=lake split=val device=cpu
    metarun-eval checkpoint=[runs/a,runs/b,runs/c] ensemble=average
    metarun-eval -m checkpoint=runs/a eval.ways=5,20 eval.shots=1,5      # a Hydra sweep

Everything not overridden comes from the config saved in the checkpoint, so
``metarun-eval checkpoint=<run>`` meets exactly the run's own test episodes and reproduces its
test score. Each evaluation writes ``summary.json`` (and ``metarun-eval.log``) to its own
directory, ``outputs/eval/<date>/<time>`` unless ``hydra.run.dir`` says otherwise.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from metarun.configs import config_dir
from metarun.types import Split

log = logging.getLogger("metarun")

#: ``eval.*`` keys of ``conf/evaluate.yaml`` -> the run-config keys they set.
EVAL_KEYS = {"ways": ("eval.ways",), "shots": ("eval.shots",), "queries": ("eval.queries",),
             "episodes": ("eval.test_episodes", "eval.val_episodes")}


def _split(name: str) -> Split:
    try:
        return Split(name)
    except ValueError:
        raise ValueError(f"split must be one of {[s.value for s in Split]}; got {name!r}") \
            from None


def run_overrides(eval_keys: dict[str, Any], data: dict[str, Any],
                  seed: int | None) -> dict[str, Any]:
    """The run-config keys that ``metarun-eval``'s ``eval.*``, ``data.*`` and ``seed`` change.

    Raises:
        ValueError: an ``eval`` value that is not a positive integer, or a seed that
            ``metarun`` would refuse.
    """
    out: dict[str, Any] = {}
    for key, value in eval_keys.items():
        if value is None:
            continue
        if key not in EVAL_KEYS:
            raise ValueError(f"eval.{key} is not an evaluation setting; choose from "
                             f"{', '.join(f'eval.{k}' for k in EVAL_KEYS)}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"eval.{key} must be a positive integer; got {value!r}")
        out.update(dict.fromkeys(EVAL_KEYS[key], value))
    out.update({f"data.{key}": value for key, value in data.items()})
    if seed is not None:
        from metarun.validate import MAX_SEED

        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer from 0 to 2**63 - 1 (as for metarun); "
                             f"got {seed!r}")
        out["seed"] = seed
    return out


def apply_overrides(run_config: DictConfig, overrides: dict[str, Any]) -> DictConfig:
    """A copy of ``run_config`` with ``overrides``, each of which must name an existing key.

    Raises:
        ValueError: a key the run's config does not have (for data keys, naming the keys its
            dataset has).
    """
    cfg = run_config.copy()
    for key, value in overrides.items():
        if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            if key.startswith("data."):
                raise ValueError(f"{key}: the run's dataset ({cfg.data._target_}) has no such "
                                 f"key; its keys: {', '.join(map(str, cfg.data))}")
            raise ValueError(f"{key}: the run's config has no such key")
        OmegaConf.update(cfg, key, value)
    return cfg


_MISSING = object()


def evaluate_checkpoint(checkpoint: str | Path, output_dir: str | Path, *,
                        split: str = "test", device: str = "auto",
                        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Meta-test one checkpoint; write and return ``summary.json``.

    Args:
        checkpoint: a checkpoint file, or a run directory (its ``checkpoints/best.pt``).
        output_dir: where ``summary.json`` goes.
        split: ``train``, ``val`` or ``test``: whose classes the episodes come from.
        device: as for :func:`metarun.load`.
        overrides: run-config keys to change (``eval.ways``, ``eval.test_episodes``, ``seed``,
            ``data.<key>`` ...; each must exist in the run's config). Everything else is the
            run's.

    Raises:
        ValueError: the checkpoint cannot meet these episodes (another input shape or task
            type, more ways than it handles, more classes or images than the split has).
    """
    from hydra.utils import instantiate

    from metarun.api import restore
    from metarun.configs import check_stored_config
    from metarun.engine.checkpoint import load_checkpoint
    from metarun.engine.evaluate import evaluate
    from metarun.ensemble import checkpoint_file
    from metarun.run import fixed_episodes
    from metarun.rundir import write_summary

    t0 = time.perf_counter()
    which = _split(split)
    path = checkpoint_file(checkpoint)
    blob = load_checkpoint(path, map_location="cpu")
    learner = restore(blob, device, source=str(path))
    algorithm = learner.algorithm
    cfg = apply_overrides(learner.config, overrides or {})
    check_stored_config(OmegaConf.to_container(cfg), "metarun-eval's overrides")
    dataset = instantiate(cfg.data)
    trained_on = learner._dataset
    if tuple(dataset.input_shape) != tuple(trained_on.input_shape) or \
            dataset.task_type.name != algorithm.task_type.name:
        raise ValueError(f"{path} was trained on {algorithm.task_type.name} inputs of shape "
                         f"{tuple(trained_on.input_shape)}; these data give "
                         f"{dataset.task_type.name} inputs of shape "
                         f"{tuple(dataset.input_shape)}")
    ev = cfg.eval
    algorithm.check_task(ev.ways)
    splits = {s: bank.to(learner.device) for s, bank in dataset.load().items()}
    episodes = fixed_episodes(cfg, splits, which)
    result = evaluate(algorithm, episodes)
    task_type = algorithm.task_type
    summary: dict[str, Any] = {
        "command": "metarun-eval",
        "status": "completed",
        "checkpoint": str(path),
        "checkpoint_step": blob.get("step"),
        "algo": cfg.algo._target_.rsplit(".", 1)[-1],
        "task_type": task_type.name,
        "metric": task_type.metric,
        "higher_is_better": task_type.higher_is_better,
        "split": which.value,
        "trained_task": OmegaConf.to_container(learner.config.task),
        "eval_task": {"ways": ev.ways, "shots": ev.shots, "queries": ev.queries},
        "result": {**result.as_dict(), "episodes_sha256": episodes.digest()},
        "overrides": dict(overrides or {}),
        "seed": int(cfg.seed),
        "device": str(learner.device),
        "bn_mode": algorithm.bn_mode,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_summary(output_dir, summary)
    shape = f"{ev.ways}-way {ev.shots}-shot" if task_type.name == "classification" \
        else f"{ev.shots}-shot"
    log.info("%s %s %s (95%% CI, %d episodes, %s) of %s", which.value, task_type.metric,
             task_type.format(result.score, result.ci95), result.episodes, shape, path)
    return summary


def _evaluate(cfg: DictConfig, output_dir: str) -> dict[str, Any]:
    from metarun.ensemble import METHODS, ensemble

    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise ValueError("say which model to evaluate: checkpoint=<checkpoint file or run "
                         "directory> (or a list [a,b,...] with ensemble=average|select|fuse)")
    checkpoints = cfg.checkpoint
    many = OmegaConf.is_list(checkpoints)
    paths: list[str | Path] = [str(p) for p in checkpoints] if many else [str(checkpoints)]
    data = {str(k): v for k, v in (cfg.get("data") or {}).items()}
    eval_keys = {str(k): v for k, v in cfg.eval.items()}
    overrides = run_overrides(eval_keys, data, cfg.seed)
    if cfg.ensemble is None:
        if len(paths) != 1:
            raise ValueError(f"{len(paths)} checkpoints given: choose how to combine them with "
                             f"ensemble={'|'.join(METHODS)}")
        return evaluate_checkpoint(paths[0], output_dir, split=cfg.split,
                                   device=cfg.device.name, overrides=overrides)
    apply_overrides(load_config(paths[0]), overrides)  # unknown keys fail before loading all
    summary = ensemble(paths, str(cfg.ensemble), output_dir, device=str(cfg.device.name),
                       overrides=overrides, split=_split(str(cfg.split)))
    result = summary["ensemble"]["test"]
    metric = summary["metric"]
    from metarun.report.table import format_score

    log.info("%s ensemble of %d: %s %s (95%% CI, %d episodes)", cfg.ensemble, len(paths),
             metric, format_score(metric, result[metric], result["ci95"]), result["episodes"])
    return summary


def load_config(checkpoint: str | Path) -> DictConfig:
    """The run config saved in a checkpoint file or run directory."""
    from metarun.configs import trusted_config
    from metarun.engine.checkpoint import load_checkpoint
    from metarun.ensemble import checkpoint_file

    path = checkpoint_file(checkpoint)
    return trusted_config(load_checkpoint(path, map_location="cpu"), str(path))


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def _app(cfg: DictConfig) -> float:
    from metarun.cli import run_job

    return run_job(lambda output_dir: _job(cfg, output_dir),
                   failure={"command": "metarun-eval"})


def _job(cfg: DictConfig, output_dir: str) -> float:
    """One evaluation in its own directory, which must hold no other job's results."""
    from metarun.rundir import claim, refuse_results

    refuse_results(output_dir, "hydra.run.dir")
    claim(output_dir, cfg)
    summary = _evaluate(cfg, output_dir)
    result = summary.get("result") or summary["ensemble"]["test"]
    return float(result[summary["metric"]])


def main() -> None:
    """Console-script entry point: ``data.<key>=value`` changes a key of the run's own data
    config (so it needs no ``+``)."""
    from metarun.cli import check_output_dir, check_overrides, expand_device_shorthand, run_app

    args = [f"++{a}" if a.startswith("data.") else a
            for a in expand_device_shorthand(sys.argv[1:])]
    sys.argv = [sys.argv[0], *args]
    run_app("metarun-eval", _app,
            check_overrides(args, config_name="evaluate") or check_output_dir(args))


if __name__ == "__main__":
    main()
