"""``algo.vectorize=true``: tasks under ``torch.func.vmap`` give the looped meta-gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metarun.algorithms.anil import ANIL
from metarun.algorithms.maml import MAML
from metarun.algorithms.mamlpp import MAMLpp
from metarun.algorithms.metasgd import MetaSGD
from metarun.algorithms.reptile import Reptile
from metarun.backbones.conv4 import Conv4
from metarun.backbones.mlp import MLP
from metarun.data.sinusoid import Sinusoid
from metarun.types import EpisodeBatch
from tests.helpers import random_image_batch

WAYS, SHOTS, QUERIES, TASKS = 5, 1, 2, 3
CASES = {
    "maml-2nd-order-2-steps": (MAML, {"inner_steps": 2}),
    "fomaml-2-steps": (MAML, {"inner_steps": 2, "first_order": True}),
    "maml-zero-head": (MAML, {"inner_steps": 2, "head": "zero"}),
    "anil": (ANIL, {"inner_steps": 2}),
    "metasgd": (MetaSGD, {}),
    "mamlpp": (MAMLpp, {"inner_steps": 2, "test_inner_steps": 2, "msl_epochs": 1}),
    "reptile-adam": (Reptile, {"inner_steps": 2}),
    "reptile-sgd": (Reptile, {"inner_steps": 2, "inner_optimizer": "sgd"}),
}


def _images() -> EpisodeBatch:
    return random_image_batch(TASKS, WAYS, SHOTS, QUERIES)


def _grads(model: nn.Module, batch: EpisodeBatch) -> tuple[torch.Tensor, float]:
    out = model.meta_train_step(batch)  # type: ignore[operator]
    out.loss.backward()
    grads = torch.cat([torch.zeros_like(p).flatten() if p.grad is None else p.grad.flatten()
                       for p in model.parameters()])
    return grads, out.loss.item()


@pytest.fixture
def float64():  # type: ignore[no-untyped-def]
    """Float32 gradients of the loop and of vmap differ by up to ~3e-4 after Meta-SGD's step
    (different reduction orders, e.g. with one thread), which hides real differences: compare
    in float64."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("case", list(CASES))
def test_vectorised_meta_gradient_equals_the_loop(case: str, float64: None) -> None:
    """Conv-4 with batch norm in batch-statistics mode (its training mode)."""
    cls, kwargs = CASES[case]
    batch, results = _images(), []
    for vectorize in (False, True):
        torch.manual_seed(0)
        model = cls(Conv4((1, 28, 28), hidden=16), ways=WAYS, vectorize=vectorize,
                    bn_mode="batch", **kwargs)
        results.append(_grads(model, batch))
    (loop, loop_loss), (vec, vec_loss) = results
    assert loop.abs().max() > 1e-3  # a real gradient, not two zeros
    assert vec.dtype == torch.float64
    assert vec_loss == pytest.approx(loop_loss, abs=1e-10)
    torch.testing.assert_close(vec, loop, atol=1e-9, rtol=0)


def test_vectorised_regression_equals_the_loop() -> None:
    data = Sinusoid()
    sampler = data.load()["train"].sampler(1, 10, 10)  # type: ignore[index]
    batch = sampler.sample(4, torch.Generator().manual_seed(0))
    results = []
    for vectorize in (False, True):
        torch.manual_seed(0)
        model = MAML(MLP((1,)), ways=1, inner_lr=0.01, inner_steps=2, vectorize=vectorize,
                     task_type=data.task_type)
        results.append(_grads(model, batch)[0])
    torch.testing.assert_close(results[1], results[0], atol=1e-5, rtol=0)


def test_vectorised_training_leaves_running_statistics_alone() -> None:
    torch.manual_seed(0)
    model = MAML(Conv4((1, 28, 28), hidden=8), ways=WAYS, vectorize=True)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model.meta_train_step(_images())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k in before)
    assert all(m.track_running_stats for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm))  # restored afterwards


def test_vectorize_refuses_running_bn_mode() -> None:
    with pytest.raises(ValueError, match="algo.vectorize=true needs algo.bn_mode=batch"):
        MAML(Conv4((1, 28, 28), hidden=8), ways=WAYS, vectorize=True, bn_mode="running")
