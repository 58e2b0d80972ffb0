"""Each job of a parallel sweep gets its own share of the machine: its CPU threads and, with
several GPUs, its own GPU.

Hydra's joblib launcher runs ``hydra.launcher.n_jobs`` jobs at once in worker processes, and
torch gives each of them every core: on this 2-core machine two such jobs slow each other
down about tenfold. A job here claims a free *slot* among the workers (an exclusive lock on
``<sweep dir>/.slots/<i>/.lock``, held while it runs, so a slot is never shared, whichever
worker finishes first) and takes ``cores // workers`` threads and GPU ``slot % GPUs``. The
top-level ``threads`` key, when set, wins over the share, and ``device=cuda:N`` over the
GPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("metarun")


def workers(hydra_cfg: Any) -> int:
    """How many jobs the launcher runs at once: joblib's ``n_jobs`` (negative: counted from
    the number of cores, as joblib counts), else 1."""
    target = str(OmegaConf.select(hydra_cfg, "launcher._target_", default="") or "")
    if "joblib" not in target.lower():
        return 1
    n_jobs = int(OmegaConf.select(hydra_cfg, "launcher.n_jobs", default=-1) or -1)
    cores = os.cpu_count() or 1
    return max(1, n_jobs if n_jobs > 0 else cores + 1 + n_jobs)


@contextmanager
def _slot(sweep_dir: Path, count: int, job_num: int) -> Iterator[int]:
    """The first free slot of ``count`` (held until the block ends)."""
    from metarun.engine.lock import RunLock
    from metarun.errors import RunLockedError

    with ExitStack() as stack:
        for i in range(count):
            try:
                stack.enter_context(RunLock(sweep_dir / ".slots" / str(i)))
            except RunLockedError:
                continue
            yield i
            return
        yield job_num % count  # more jobs at once than workers: should not happen


@contextmanager
def machine_share(cfg: DictConfig, hydra_cfg: Any) -> Iterator[None]:
    """Set this job's threads and GPU for as long as it runs."""
    import torch

    count = workers(hydra_cfg)
    threads = OmegaConf.select(cfg, "threads", default=None)
    if count == 1:
        if threads is not None:
            torch.set_num_threads(int(threads))
        yield
        return
    with _slot(Path(hydra_cfg.sweep.dir), count, int(hydra_cfg.job.num)) as slot:
        share = int(threads) if threads is not None else max(1, (os.cpu_count() or 1) // count)
        torch.set_num_threads(share)
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus > 1:
            torch.cuda.set_device(slot % gpus)
        log.info("job %s: slot %d of %d parallel jobs, %d CPU threads%s", hydra_cfg.job.num,
                 slot, count, share, f", GPU {slot % gpus}" if gpus > 1 else "")
        yield
