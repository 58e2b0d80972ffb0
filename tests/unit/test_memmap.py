"""A memory-mapped bank: episodes gather only the images they use, so the resident pages of the
cache file stay far below its size (here a generated cache of about 250 MB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from metarun.data.cache import BankCache

IMAGES, SHAPE = 12_000, (3, 84, 84)  # 254 MB of uint8
SCRIPT = """
import sys, torch
from pathlib import Path
from metarun.data.bank import ClassImages
from metarun.data.cache import BankCache

def rss():
    # resident pages backed by files: the bank's (freed batches are anonymous memory)
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024

cache = BankCache(Path(sys.argv[1]), {"generated": 1}, (3, 84, 84))
before = rss()
part = cache.read(memmap=True)["train"]
bank = ClassImages(torch.from_numpy(part.pixels), counts=torch.tensor(part.counts),
                   resident=False, release=part.release)
sampler = bank.sampler(5, 5, 15)
g = torch.Generator().manual_seed(0)
for _ in range(10):
    batch = sampler.sample(2, g)
    assert batch.query_x.shape == (2, 75, 3, 84, 84)
print(rss() - before)
"""


def test_training_from_a_memmapped_cache_reads_only_what_it_gathers(tmp_path: Path) -> None:
    path = tmp_path / "bank.npy"
    counts = [IMAGES // 100] * 100

    def fill(split: str, out: np.ndarray) -> None:
        for start in range(0, len(out), 1000):
            out[start:start + 1000] = start // 1000

    BankCache(path, {"generated": 1}, SHAPE).build({"train": ([str(c) for c in range(100)],
                                                               counts)}, fill, memmap=True)
    size = path.stat().st_size
    assert size > 250e6
    grown = int(subprocess.run([sys.executable, "-c", SCRIPT, str(path)], check=True,
                               capture_output=True, text=True).stdout.split()[-1])
    # 10 steps of 2 episodes gather 2,000 images (42 MB); the pages read are dropped after each
    # gather, so the bank's resident pages stay far below the 254 MB on disk (without the
    # release they grew by 175 MB, measured).
    assert grown < size / 10, (grown, size)
