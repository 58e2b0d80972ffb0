"""Image benchmarks at 84x84x3: episode sampling with and without augmentation against the
ProtoNet ResNet-12 step it feeds, and the resident memory of a memory-mapped bank.

    python bench/images.py [--repeats 5] [--device cuda] [--cache-mb 2000]

Episodes: 5-way 5-shot 15-query, meta-batch 4 (400 images a step), drawn from a bank of
random pixels (64 classes x 100 images, in memory; miniImageNet's images are not needed to
time the gather). Augmentation: ``data.augment=metaoptnet`` (crop with padding 8, flip, colour
jitter) and ``feat`` (random resized crop, flip), on the device. The step: ProtoNet with the
standard ResNet-12 (12.4M parameters), forward and backward over the 4 episodes, SGD update.
Target: sampling with augmentation at least 10x faster than the step.

Memory: a generated cache of ``--cache-mb`` MB (84x84x3 uint8) written in the cache format,
opened memory-mapped as tieredImageNet's is, then 50 steps of episodes sampled from it, then
10 ProtoNet Conv-4 training steps on it (one 5w5s15q episode each); printed: the resident
memory's growth over the sampling, the sampling rate, and the peak resident memory of that
process (VmHWM) against the peak of the same work on a 4 MB bank in memory.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from metarun.algorithms.protonet import ProtoNet
from metarun.backbones.resnet import ResNet12
from metarun.data.augment import ImagePipeline
from metarun.data.bank import ClassImages
from metarun.data.cache import BankCache

from _common import time_ms

MEAN, STD = (0.4721, 0.4533, 0.4100), (0.2772, 0.2677, 0.2845)
PROBE = """
import sys, time, torch
from pathlib import Path
from metarun.algorithms.protonet import ProtoNet
from metarun.backbones.conv4 import Conv4
from metarun.data.bank import ClassImages
from metarun.data.cache import BankCache

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) // 1024

if sys.argv[1] == "memory":  # the same training on a 4 MB bank in memory: the baseline
    bank = ClassImages(torch.randint(0, 256, (10, 20, 3, 84, 84), dtype=torch.uint8))
else:
    part = BankCache(Path(sys.argv[1]), {"bench": 1}, (3, 84, 84)).read(memmap=True)["train"]
    bank = ClassImages(torch.from_numpy(part.pixels), counts=torch.tensor(part.counts),
                       resident=False, release=part.release)
sampler, g = bank.sampler(5, 5, 15), torch.Generator().manual_seed(0)
before = status("VmRSS:")
t0 = time.perf_counter()
for _ in range(50):
    sampler.sample(4, g)
seconds = time.perf_counter() - t0
after = status("VmRSS:")
# Then training on it: 10 ProtoNet Conv-4 steps, one 5w5s15q episode each.
torch.manual_seed(0)
learner = ProtoNet(Conv4((3, 84, 84)))
optim = torch.optim.Adam(learner.parameters(), lr=1e-3)
for _ in range(10):
    optim.zero_grad()
    learner.meta_train_step(sampler.sample(1, g)).loss.backward()
    optim.step()
print(before, after, status("VmHWM:"), 200 / seconds)
"""


def sampling(device: torch.device, repeats: int) -> dict[str, float]:
    pixels = torch.randint(0, 256, (64, 100, 3, 84, 84), dtype=torch.uint8)
    out = {}
    for recipe in ("none", "metaoptnet", "feat"):
        bank = ClassImages(pixels, pipeline=ImagePipeline(MEAN, STD, recipe, 8)).to(device)
        sampler, g = bank.sampler(5, 5, 15), torch.Generator().manual_seed(0)
        out[recipe] = time_ms(lambda s=sampler, g=g: s.sample(4, g), repeats)
    return out


def step_ms(device: torch.device, repeats: int) -> float:
    pixels = torch.randint(0, 256, (64, 100, 3, 84, 84), dtype=torch.uint8)
    bank = ClassImages(pixels, pipeline=ImagePipeline(MEAN, STD)).to(device)
    batch = bank.sampler(5, 5, 15).sample(4, torch.Generator().manual_seed(0))
    learner = ProtoNet(ResNet12((3, 84, 84))).to(device)
    optim = torch.optim.SGD(learner.parameters(), lr=0.1, momentum=0.9)

    def step() -> None:
        optim.zero_grad()
        learner.meta_train_step(batch).loss.backward()
        optim.step()

    return time_ms(step, repeats)


def _probe(source: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", PROBE, source], check=True,
                          capture_output=True, text=True).stdout.split()


def memory(cache_mb: int) -> tuple[int, int, int, int, float, int]:
    """Cache size, resident MB before and after sampling, peak MB (sampling and training) and
    sampling rate from the memory-mapped cache; the peak of the same work on a small bank."""
    images = cache_mb * 2**20 // (3 * 84 * 84)
    classes = max(10, images // 600)
    counts = [images // classes] * classes
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bank.npy"

        def fill(split: str, out: np.ndarray) -> None:
            for start in range(0, len(out), 2000):
                out[start:start + 2000] = np.uint8(start % 251)

        BankCache(path, {"bench": 1}, (3, 84, 84)).build(
            {"train": ([str(c) for c in range(classes)], counts)}, fill, memmap=True)
        size = path.stat().st_size // 2**20
        result = _probe(str(path))
    baseline = int(_probe("memory")[2])
    before, after, peak = (int(v) for v in result[:3])
    return size, before, after, peak, float(result[3]), baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-mb", type=int, default=2000)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    times = sampling(device, args.repeats)
    step = step_ms(device, max(2, args.repeats // 2))
    for recipe, ms in times.items():
        print(f"sampling 4 episodes (5w5s15q, 84x84x3), augment={recipe:10s} {ms:8.1f} ms  "
              f"({4000 / ms:7.1f} episodes/s)")
    print(f"ProtoNet ResNet-12 step on those 4 episodes          {step:8.1f} ms")
    worst = max(times.values())
    verdict = "meets" if step / worst >= 10 else "MISSES"
    print(f"step / slowest augmented sampling = {step / worst:.1f}x ({verdict} the 10x target)")
    size, before, after, peak, rate, baseline = memory(args.cache_mb)
    print(f"memory-mapped cache of {size} MB: resident {before} MB before sampling, {after} MB "
          f"after 50 steps ({rate:.1f} episodes/s, no augmentation or normalisation)")
    print(f"peak resident memory, sampling and 10 ProtoNet Conv-4 steps on it: {peak} MB "
          f"(the same on a 4 MB bank in memory: {baseline} MB)")

if __name__ == "__main__":
    main()
