"""Episodes per second drawn by the tensor-native sampler (Omniglot, 5-way 1-shot 15-query).

    python bench/sampler.py [--seconds 3]

Target: at least 10,000 episodes/s on the CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import omniglot_train, sampler_5w1s15q


def episodes_per_second(sampler, batch: int, seconds: float) -> float:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    sampler.sample(batch, g)  # warm up
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sampler.sample(batch, g)
        count += batch
    return count / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    bank, source = omniglot_train()
    sampler = sampler_5w1s15q(bank)
    print(f"data: {source}")
    print(f"torch_threads: {torch.get_num_threads()}")
    for batch in (32, 1):
        rate = episodes_per_second(sampler, batch, args.seconds)
        print(f"sampler_5w1s15q_batch{batch}_episodes_per_s: {rate:.0f}")


if __name__ == "__main__":
    main()
