"""On a CUDA device (skipped without one): each family trains a step in each precision mode,
``algo.checkpoint_inner`` gives the CPU's meta-gradient, and its peak memory is lower."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from metarun.algorithms.base import Algorithm
from metarun.algorithms.maml import MAML
from metarun.algorithms.protonet import ProtoNet
from metarun.algorithms.reptile import Reptile
from metarun.backbones.conv4 import Conv4
from metarun.engine.precision import Precision
from tests.helpers import random_image_batch

pytestmark = pytest.mark.cuda

FAMILIES: dict[str, Callable[[], Algorithm]] = {
    "maml-second-order": lambda: MAML(Conv4((1, 28, 28), hidden=16), 5, inner_steps=2),
    "maml-first-order": lambda: MAML(Conv4((1, 28, 28), hidden=16), 5, first_order=True),
    "protonet": lambda: ProtoNet(Conv4((1, 28, 28), hidden=16)),
    "reptile": lambda: Reptile(Conv4((1, 28, 28), hidden=16), 5, inner_steps=2),
}


def _step(algorithm: Algorithm, precision: str) -> float:
    cuda = torch.device("cuda")
    mode = Precision(precision, cuda, algorithm.second_order)
    optimizer = torch.optim.Adam(algorithm.parameters(), lr=1e-3)
    batch = random_image_batch(tasks=4, ways=5, shots=1, queries=3).to(cuda)
    with mode.autocast():
        out = algorithm.meta_train_step(batch)
    mode.backward(out.loss)
    mode.unscale(optimizer)
    mode.step(optimizer)
    return float(out.loss)


@pytest.mark.parametrize("precision", ["32", "bf16", "16-mixed"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_trains_a_step_in_every_precision(family: str, precision: str) -> None:
    torch.manual_seed(0)
    algorithm = FAMILIES[family]().cuda().train()
    if precision == "16-mixed" and algorithm.second_order:
        with pytest.raises(ValueError, match="16-mixed cannot train a second-order method"):
            _step(algorithm, precision)
        return
    loss = _step(algorithm, precision)
    assert loss == loss and abs(loss) < 1e4  # finite


def _meta_gradient(device: str, checkpoint: bool, steps: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    maml = MAML(Conv4((1, 28, 28), hidden=16), 5, inner_steps=steps,
                checkpoint_inner=checkpoint).to(device).train()
    maml.meta_train_step(random_image_batch(tasks=2, ways=5, shots=1, queries=3)
                         .to(torch.device(device))).loss.backward()
    return {n: p.grad.detach().cpu() for n, p in maml.named_parameters() if p.grad is not None}


def test_checkpoint_inner_on_cuda_gives_the_cpu_meta_gradient_with_less_memory() -> None:
    cpu = _meta_gradient("cpu", checkpoint=False)
    torch.cuda.reset_peak_memory_stats()
    plain = _meta_gradient("cuda", checkpoint=False, steps=8)
    peak = torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    _meta_gradient("cuda", checkpoint=True, steps=8)
    assert torch.cuda.max_memory_allocated() < peak
    assert plain  # the 8-step run had gradients
    got = _meta_gradient("cuda", checkpoint=True)
    for key, grad in cpu.items():
        torch.testing.assert_close(got[key], grad, rtol=1e-3, atol=1e-4, msg=key)
