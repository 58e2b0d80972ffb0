"""Precision and memory options: ``algo.checkpoint_inner`` gives the same meta-gradient (and
batch-norm statistics) as without; ``train.precision=bf16`` trains on a CPU, second order
included, close to float32; ``16-mixed`` scales the loss, keeps its scaler in the checkpoint,
and refuses second order in one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from metarun.algorithms.base import Algorithm
from metarun.algorithms.maml import MAML
from metarun.algorithms.mamlpp import MAMLpp
from metarun.algorithms.metasgd import MetaSGD
from metarun.algorithms.protonet import ProtoNet
from metarun.backbones.conv4 import Conv4
from metarun.engine.precision import Precision
from metarun.engine.trainer import Trainer, TrainSettings
from tests.helpers import random_image_batch

FAMILY: dict[str, Callable[[bool], Algorithm]] = {
    "maml": lambda ck: MAML(Conv4((1, 28, 28), hidden=8), 5, inner_steps=3,
                            checkpoint_inner=ck),
    "mamlpp": lambda ck: MAMLpp(Conv4((1, 28, 28), hidden=8), 5, inner_steps=3,
                                first_order_epochs=0, checkpoint_inner=ck),
    "metasgd": lambda ck: MetaSGD(Conv4((1, 28, 28), hidden=8), 5, inner_steps=2,
                                  checkpoint_inner=ck),
}


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_checkpoint_inner_gives_the_same_meta_gradient_and_statistics(name: str) -> None:
    batch = random_image_batch(tasks=2, ways=5, shots=1, queries=2)
    results = []
    for ck in (False, True):
        torch.manual_seed(0)
        algorithm = FAMILY[name](ck)
        algorithm.train()
        assert algorithm.second_order
        algorithm.meta_train_step(batch).loss.backward()
        results.append(({n: p.grad for n, p in algorithm.named_parameters()
                         if p.grad is not None}, algorithm.state_dict()))
    (grads, state), (grads_ck, state_ck) = results
    assert grads.keys() == grads_ck.keys() and grads
    for key, grad in grads.items():
        torch.testing.assert_close(grads_ck[key], grad, rtol=0, atol=1e-6, msg=key)
    for key, value in state.items():  # recomputation did not update the statistics twice
        torch.testing.assert_close(state_ck[key], value, rtol=0, atol=1e-6, msg=key)


def test_checkpoint_inner_is_refused_under_vmap() -> None:
    with pytest.raises(ValueError, match="algo.checkpoint_inner=true needs "
                                         "algo.vectorize=false"):
        MAML(Conv4((1, 28, 28), hidden=8), 5, vectorize=True, checkpoint_inner=True)


class _Tasks:
    def sample(self, tasks: int, generator: torch.Generator) -> object:
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        return random_image_batch(tasks=tasks, ways=5, shots=1, queries=2, seed=seed)


def _trainer(algorithm: Algorithm, precision: str, out: Path | None = None) -> Trainer:
    settings = TrainSettings(iterations=3, meta_batch=2, eval_every=3, log_every=1, seed=0,
                             precision=precision)
    return Trainer(algorithm, torch.optim.Adam(algorithm.parameters(), lr=1e-3), _Tasks(),
                   None, settings, checkpoint_dir=out or Path("unused"),  # type: ignore[arg-type]
                   metrics=None)


MODELS: dict[str, Callable[[], Algorithm]] = {
    "maml (second order)": lambda: MAML(Conv4((1, 28, 28), hidden=8), 5, inner_steps=2),
    "protonet": lambda: ProtoNet(Conv4((1, 28, 28), hidden=8)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bf16_trains_on_a_cpu_close_to_float32(name: str) -> None:
    losses = {}
    for precision in ("32", "bf16"):
        torch.manual_seed(0)
        algorithm = MODELS[name]()
        before = [p.detach().clone() for p in algorithm.parameters()]
        trainer = _trainer(algorithm, precision)
        losses[precision] = trainer._update(1)[0]
        assert all(p.dtype == torch.float32 for p in algorithm.parameters())
        assert all(p.grad is None or p.grad.dtype == torch.float32
                   for p in algorithm.parameters())
        assert any(not torch.equal(b, p) for b, p in zip(before, algorithm.parameters(),
                                                          strict=True))
    assert losses["bf16"] == pytest.approx(losses["32"], rel=0.05)
    assert losses["bf16"] != losses["32"]  # it did run in bfloat16


def test_16_mixed_refuses_second_order_in_one_line() -> None:
    with pytest.raises(ValueError, match="16-mixed cannot train a second-order method"):
        _trainer(MAML(Conv4((1, 28, 28), hidden=8), 5), "16-mixed")
    with pytest.raises(ValueError, match="train.precision must be one of 32, bf16, 16-mixed"):
        Precision("fp8")


def test_16_mixed_scales_the_loss_and_keeps_its_scaler_in_the_checkpoint(
        tmp_path: Path) -> None:
    torch.manual_seed(0)
    algorithm = MAML(Conv4((1, 28, 28), hidden=8), 5, first_order=True)
    trainer = _trainer(algorithm, "16-mixed", tmp_path)
    assert trainer.precision.scaler is not None
    for step in (1, 2):
        loss, _ = trainer._update(step)
        assert loss == loss  # finite
    scale = trainer.precision.scaler.get_scale()
    path = trainer._save("last.pt", 2)
    blob = torch.load(path, weights_only=False)
    assert blob["scaler"]["scale"] == scale
    resumed = _trainer(MAML(Conv4((1, 28, 28), hidden=8), 5, first_order=True), "16-mixed")
    resumed.precision.load_state_dict(blob["scaler"])
    assert resumed.precision.scaler is not None
    assert resumed.precision.scaler.get_scale() == scale


def _first_loss(algorithm: Algorithm, channels_last: bool = False,
                compile_with: bool | str = False) -> float:
    from metarun.engine import speed

    speed.apply(algorithm, channels_last, compile_with)
    return _trainer(algorithm, "32")._update(1)[0]


def test_channels_last_keeps_the_loss_and_puts_conv_weights_in_nhwc() -> None:
    torch.manual_seed(0)
    plain = _first_loss(ProtoNet(Conv4((1, 28, 28), hidden=8)))
    torch.manual_seed(0)
    algorithm = ProtoNet(Conv4((1, 28, 28), hidden=8))
    nhwc = _first_loss(algorithm, channels_last=True)
    conv = next(p for p in algorithm.parameters() if p.dim() == 4 and p.shape[1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert nhwc == pytest.approx(plain, rel=1e-5)


@pytest.mark.parametrize("make", [
    lambda: ProtoNet(Conv4((1, 28, 28), hidden=8)),
    lambda: MAML(Conv4((1, 28, 28), hidden=8), 5, first_order=True),
], ids=["protonet", "fomaml"])
def test_compile_trains_first_order_and_metric_learners_as_before(
        make: Callable[[], Algorithm]) -> None:
    # aot_eager: torch.compile's graph capture and compiled autograd, without code generation
    # (what inductor adds is a C++ compiler's work, minutes on this machine)
    torch.manual_seed(0)
    plain = _first_loss(make())
    torch.manual_seed(0)
    algorithm = make()
    compiled = _first_loss(algorithm, compile_with="aot_eager")
    assert compiled == pytest.approx(plain, rel=1e-5)
    assert all(k.count("_orig_mod") == 0 for k in algorithm.state_dict())  # same keys


def test_compile_refuses_second_order_in_one_line() -> None:
    from metarun.engine import speed

    with pytest.raises(ValueError, match="train.compile cannot train a second-order method"):
        speed.apply(MAML(Conv4((1, 28, 28), hidden=8), 5), compile_with=True)
