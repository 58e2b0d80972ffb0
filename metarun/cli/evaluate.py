"""``metarun-eval``: meta-test saved checkpoints, or an ensemble of them, on any compatible
episodes (see :mod:`metarun.jobs.evaluate`)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from metarun.cli.common import Command
from metarun.cli.common import main as run_command
from metarun.summary import RunResult

#: Spellings of earlier versions -> the key now (the same key as metarun's).
RENAMED = {"eval.episodes": "eval.test_episodes (eval.val_episodes with split=val)"}


def _job(cfg: DictConfig, output_dir: str) -> RunResult:
    from metarun.jobs.evaluate import job

    return job(cfg, output_dir)


def run_keys_need_no_plus(argv: list[str]) -> list[str]:
    """``data.<key>=value`` and ``algo.<key>=value`` change a key of the run's own data or
    algorithm config, which ``conf/evaluate.yaml`` cannot list: pass them to Hydra as
    ``++data.<key>``, ``++algo.<key>``."""
    return [f"++{a}" if a.startswith(("data.", "algo.")) else a for a in argv]


def checkpoints_exist(argv: list[str]) -> str | None:
    """An error line for a ``checkpoint=`` path (or list element) that does not exist."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from metarun.engine.checkpoint import checkpoint_file

    for arg in argv:
        if not arg.lstrip("+").startswith("checkpoint="):
            continue
        try:
            override = OverridesParser.create().parse_override(arg.lstrip("+"))
        except Exception:  # noqa: BLE001 - Hydra reports a malformed override itself
            return None
        if override.is_sweep_override():
            return None
        value = override.value()
        for path in value if isinstance(value, list) else [value]:
            if not checkpoint_file(str(path)).is_file():
                return f"no checkpoint at {checkpoint_file(str(path))}"
    return None


def show_ensemble(result: RunResult) -> None:
    """The members' and the ensemble's scores, as a table (an ensemble job only)."""
    summary = result.summary
    if "members" not in summary:
        return
    from rich.console import Console
    from rich.table import Table

    from metarun.tasktypes import by_metric

    metric = summary["metric"]
    task_type = by_metric(metric)
    table = Table(title=f"{summary['method']} ensemble, {summary['ensemble']['test']['episodes']}"
                  f" test episodes (seed {summary['seed']})")
    for column in ("#", "member", "algo", f"val best {metric}", f"test {metric} (95% CI)"):
        table.add_column(column, overflow="fold" if column == "member" else "ellipsis")
    selected, chosen = summary["ensemble"].get("selected"), ""
    for i, m in enumerate(summary["members"], 1):
        test = m["test"]
        table.add_row(str(i), m["checkpoint"], m["algo"], task_type.format(m[f"val_best_{metric}"]),
                      task_type.format(test[metric], test["ci95"]))
        if m["checkpoint"] == selected:
            chosen = f"#{i}"
    test = summary["ensemble"]["test"]
    table.add_row("", f"ensemble ({summary['method']}{', ' + chosen if chosen else ''})", "",
                  "", task_type.format(test[metric], test["ci95"]), style="bold")
    Console().print(table)
    print(f"summary: {Path(result.output_dir) / 'summary.json'}")


COMMAND = Command(prog="metarun-eval", config_name="evaluate", job=_job, renamed=RENAMED,
                  rewrite=run_keys_need_no_plus, checks=(checkpoints_exist,),
                  show=show_ensemble)


def main() -> None:
    """Console-script entry point."""
    run_command(COMMAND)


if __name__ == "__main__":
    main()
