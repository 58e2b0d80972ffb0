"""``metarun``: meta-train and meta-test as the composed config says (one job per run)."""

from __future__ import annotations

from omegaconf import DictConfig

from metarun.cli.common import Command
from metarun.cli.common import main as run_command
from metarun.summary import RunResult


def _job(cfg: DictConfig, output_dir: str) -> RunResult:
    from metarun.jobs.train import run

    return run(cfg, output_dir)


COMMAND = Command(prog="metarun", config_name="config", job=_job)


def main() -> None:
    """Console-script entry point."""
    run_command(COMMAND)


if __name__ == "__main__":
    main()
