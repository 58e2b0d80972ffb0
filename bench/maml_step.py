"""Second-order MAML meta-step time against plain training on the same images.

    python bench/maml_step.py [--repeats 5]

MAML: 5-way 1-shot 15-query, meta-batch 32, one inner step, Conv-4, Adam update.
Plain training: a Conv-4 classifier, forward + backward with cross-entropy over the same
32 x 80 images, task by task, then the same Adam update. Both measured in this run.
Target: ratio at most 1.5.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from metarun.algorithms.maml import MAML
from metarun.backbones.conv4 import Conv4

from _common import omniglot_train, sampler_5w1s15q, time_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--first-order", action="store_true")
    args = parser.parse_args()

    bank, source = omniglot_train()
    batch = sampler_5w1s15q(bank).sample(args.meta_batch, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    maml = MAML(Conv4((1, 28, 28)), ways=5, inner_lr=0.4, inner_steps=1,
                first_order=args.first_order)
    maml_opt = torch.optim.Adam(maml.parameters(), lr=1e-3)

    def maml_step() -> None:
        maml_opt.zero_grad(set_to_none=True)
        maml.meta_train_step(batch).loss.backward()
        maml_opt.step()

    plain = nn.Sequential(Conv4((1, 28, 28)), nn.Linear(64, 5))
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-3)

    def plain_step() -> None:
        plain_opt.zero_grad(set_to_none=True)
        for task in batch:
            x = torch.cat([task.support_x, task.query_x])
            y = torch.cat([task.support_y, task.query_y])
            (F.cross_entropy(plain(x), y) / len(batch)).backward()
        plain_opt.step()

    maml.train()
    plain.train()
    maml_ms = time_ms(maml_step, args.repeats)
    plain_ms = time_ms(plain_step, args.repeats)
    order = "first" if args.first_order else "second"
    print(f"data: {source}")
    print(f"torch_threads: {torch.get_num_threads()}")
    print(f"maml_{order}_order_step_ms: {maml_ms:.1f}")
    print(f"plain_training_step_ms: {plain_ms:.1f}")
    print(f"maml_to_plain_ratio: {maml_ms / plain_ms:.2f}")


if __name__ == "__main__":
    main()
