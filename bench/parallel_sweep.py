"""A joblib sweep of two CPU jobs: each job with its share of the cores (the default) against
each with all of them (``threads`` set to the core count: what torch does by itself), and the
same two jobs one after the other.

    python bench/parallel_sweep.py [--iterations 600]

Prints the sweep's wall time in each mode and the ratios. Run it alone: another torch
process on the machine makes every number meaningless.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

JOB = ["algo=protonet", "data=omniglot", "device=cpu", "algo.train_ways=null",
       "train.eval_every=1000", "train.log_every=1000", "eval.val_episodes=20",
       "eval.test_episodes=20", "train.plot=false", "seed=0,1"]


def sweep(extra: list[str], iterations: int) -> float:
    """Seconds for the two-job sweep with ``extra`` overrides."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "metarun", "-m", *JOB,
                        f"train.iterations={iterations}", f"hydra.sweep.dir={out}", *extra],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=600)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    modes = {
        "joblib, 2 jobs, a share of the cores each (default)": joblib,
        f"joblib, 2 jobs, all {cores} cores each (threads={cores})": [*joblib,
                                                                        f"threads={cores}"],
        "one after the other (basic launcher)": [],
    }
    sweep(joblib, 2)  # decode the cache once, outside the timings
    times = {}
    for name, extra in modes.items():
        times[name] = sweep(extra, args.iterations)
        print(f"{name}: {times[name]:.1f} s", flush=True)
    shared, over, serial = times.values()
    print(f"oversubscribed / shared: {over / shared:.2f}x; one after the other / shared: "
          f"{serial / shared:.2f}x ({cores} cores, ProtoNet Omniglot, {args.iterations} steps "
          "a job)")


if __name__ == "__main__":
    main()
