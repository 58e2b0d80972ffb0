"""``metarun``: meta-train and meta-test as the composed config says (one job per run)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from metarun.cli.common import Command
from metarun.cli.common import main as run_command
from metarun.search.trial import handed_to_ranks, reporter, trial_of
from metarun.summary import RunResult


def _job(cfg: DictConfig, output_dir: str) -> RunResult:
    from hydra.core.hydra_config import HydraConfig

    from metarun.world import env_rank, env_world_size

    # a trial of metarun's Optuna search reports its validations (None otherwise): in one
    # process, or in rank 0 of those dist.nproc starts
    trial = trial_of(HydraConfig.get())
    if cfg.dist.nproc > 1 and env_world_size() == 1:  # start the processes (not under torchrun)
        from metarun import build
        from metarun.jobs.launch import launch

        run_dir = build.resume_dir(cfg) or output_dir
        return launch(cfg.dist.nproc, list(HydraConfig.get().overrides.task), Path(run_dir),
                      env=handed_to_ranks(trial))
    from metarun.jobs.train import run

    return run(cfg, output_dir, prune=reporter(trial if env_rank() == 0 else None, output_dir))


COMMAND = Command(prog="metarun", config_name="config", job=_job)


def main() -> None:
    """Console-script entry point."""
    run_command(COMMAND)


if __name__ == "__main__":
    main()
