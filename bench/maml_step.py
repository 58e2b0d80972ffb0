"""MAML meta-step time, looped and vectorised, against plain training on the same images.

    python bench/maml_step.py [--repeats 5] [--first-order] [--device cuda] [--precision bf16]
    python bench/maml_step.py --memory --device cuda

``--precision bf16`` runs both steps under bfloat16 autocast (as ``train.precision=bf16``).
``--memory`` prints instead the peak GPU memory of one second-order MAML meta-step for 1 to
10 inner steps, with and without ``algo.checkpoint_inner`` (CUDA only).

MAML: 5-way 1-shot 15-query, meta-batch 32, one inner step, Conv-4, Adam update; once with
the tasks in a Python loop (``algo.vectorize=false``) and once under ``torch.func.vmap``
(``algo.vectorize=true``). Plain training: a Conv-4 classifier, forward + backward with
cross-entropy over the same 32 x 80 images, task by task, then the same Adam update. All
measured in this run. Target: looped ratio at most 1.5.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from metarun.algorithms.maml import MAML
from metarun.backbones.conv4 import Conv4
from metarun.engine.precision import Precision

from _common import omniglot_train, sampler_5w1s15q, time_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("32", "bf16"), default="32")
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.memory:
        return memory(device, args.meta_batch)
    cast = Precision(args.precision, device)

    bank, source = omniglot_train()
    batch = sampler_5w1s15q(bank.to(device)).sample(args.meta_batch,
                                                    torch.Generator().manual_seed(0))

    def maml_step_fn(vectorize: bool) -> Callable[[], None]:
        torch.manual_seed(0)
        maml = MAML(Conv4((1, 28, 28)), ways=5, inner_lr=0.4, inner_steps=1,
                    first_order=args.first_order, vectorize=vectorize).to(device).train()
        opt = torch.optim.Adam(maml.parameters(), lr=1e-3)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with cast.autocast():
                loss = maml.meta_train_step(batch).loss
            loss.backward()
            opt.step()
            sync(device)

        return step

    plain = nn.Sequential(Conv4((1, 28, 28)), nn.Linear(64, 5)).to(device)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-3)

    def plain_step() -> None:
        plain_opt.zero_grad(set_to_none=True)
        for task in batch:
            x = torch.cat([task.support_x, task.query_x])
            y = torch.cat([task.support_y, task.query_y])
            with cast.autocast():
                loss = F.cross_entropy(plain(x), y) / len(batch)
            loss.backward()
        plain_opt.step()
        sync(device)

    plain.train()
    loop_ms = time_ms(maml_step_fn(vectorize=False), args.repeats)
    vmap_ms = time_ms(maml_step_fn(vectorize=True), args.repeats)
    plain_ms = time_ms(plain_step, args.repeats)
    order = "first" if args.first_order else "second"
    print(f"data: {source}")
    print(f"device: {device}")
    print(f"torch_threads: {torch.get_num_threads()}")
    print(f"precision: {args.precision}")
    print(f"maml_{order}_order_step_ms (loop): {loop_ms:.1f}")
    print(f"maml_{order}_order_step_ms (vmap): {vmap_ms:.1f}")
    print(f"plain_training_step_ms: {plain_ms:.1f}")
    print(f"maml_to_plain_ratio (loop): {loop_ms / plain_ms:.2f}")
    print(f"maml_to_plain_ratio (vmap): {vmap_ms / plain_ms:.2f}")


def memory(device: torch.device, meta_batch: int) -> None:
    """Peak memory of a second-order meta-step against inner steps, with and without
    ``checkpoint_inner``."""
    if device.type != "cuda":
        raise SystemExit("--memory measures GPU memory: add --device cuda")
    bank, source = omniglot_train()
    batch = sampler_5w1s15q(bank.to(device)).sample(meta_batch,
                                                    torch.Generator().manual_seed(0))
    print(f"data: {source}\ndevice: {torch.cuda.get_device_name(device)}")
    for steps in range(1, 11):
        peaks = []
        for checkpoint in (False, True):
            torch.manual_seed(0)
            maml = MAML(Conv4((1, 28, 28)), ways=5, inner_lr=0.4, inner_steps=steps,
                        checkpoint_inner=checkpoint).to(device).train()
            torch.cuda.reset_peak_memory_stats(device)
            maml.meta_train_step(batch).loss.backward()
            sync(device)
            peaks.append(torch.cuda.max_memory_allocated(device) / 2**20)
            del maml
        print(f"inner_steps {steps}: peak_MiB {peaks[0]:.0f} (checkpoint_inner: "
              f"{peaks[1]:.0f}, {peaks[1] / peaks[0]:.2f}x)")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
