"""ANIL, Meta-SGD and Reptile: the properties that define each, on small models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metarun.algorithms.anil import ANIL
from metarun.algorithms.functional import AdamDirections, inner_trajectory
from metarun.algorithms.metasgd import MetaSGD
from metarun.algorithms.reptile import Reptile
from tests.unit.test_maml import DIM, WAYS, Tiny, _batch


def test_anil_adapts_only_the_head() -> None:
    torch.manual_seed(0)
    model = ANIL(Tiny(), ways=WAYS, inner_lr=0.5, inner_steps=2, bn_mode="running").double()
    task = _batch()[0]
    learner = model._learner()
    fast = inner_trajectory(learner, dict(learner.named_parameters()),
                            model._features(task.support_x), task.support_y, F.cross_entropy,
                            steps=2, lr=0.5, create_graph=False)[-1]
    assert set(fast) == {"weight", "bias"}  # the head's parameters, nothing of the body
    assert not torch.allclose(fast["weight"], model.net[1].weight)
    # Adaptation runs without touching the body: its meta-parameters are unchanged...
    body = [p.detach().clone() for p in model.net[0].parameters()]
    model.adapt(task.support_x, task.support_y)(task.query_x)
    assert all(torch.equal(a, b) for a, b in zip(body, model.net[0].parameters(), strict=True))


def test_anil_body_still_gets_meta_gradients() -> None:
    torch.manual_seed(0)
    model = ANIL(Tiny(), ways=WAYS, inner_lr=0.5, bn_mode="running").double()
    model.meta_train_step(_batch()).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_metasgd_step_sizes_receive_gradients_and_are_used() -> None:
    torch.manual_seed(0)
    model = MetaSGD(Tiny(), ways=WAYS, inner_lr=0.3, bn_mode="running").double()
    assert len(model.step_sizes) == len(list(model.net.parameters()))
    model.meta_train_step(_batch()).loss.backward()
    for p in model.step_sizes.values():
        assert p.grad is not None and p.grad.abs().sum() > 0
    # Doubling one step-size tensor changes adaptation exactly as the formula says.
    task = _batch()[0]
    with torch.no_grad():
        model.step_sizes["1-weight"].mul_(2.0)
    params = {k: v.detach().requires_grad_() for k, v in model.net.named_parameters()}
    fast = inner_trajectory(model.net, params, task.support_x, task.support_y,
                            F.cross_entropy, steps=1, lr=model._step_size(True),
                            create_graph=False)[-1]
    loss = F.cross_entropy(functional_call(model.net, params, (task.support_x,)), task.support_y)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    torch.testing.assert_close(fast["1.weight"], params["1.weight"] - 0.6 * grads["1.weight"])
    torch.testing.assert_close(fast["1.bias"], params["1.bias"] - 0.3 * grads["1.bias"])


def test_reptile_update_is_the_formula() -> None:
    torch.manual_seed(0)
    model = Reptile(Tiny(), ways=WAYS, inner_lr=0.1, inner_steps=3, inner_optimizer="sgd",
                    bn_mode="running").double()
    batch = _batch(tasks=3)
    theta = {n: p.detach().clone() for n, p in model.net.named_parameters()}
    # Independent: 3 plain SGD steps per task on support + query, then average.
    targets = []
    for task in batch:
        x = torch.cat([task.support_x, task.query_x])
        y = torch.cat([task.support_y, task.query_y])
        w = {n: t.clone().requires_grad_() for n, t in theta.items()}
        for _ in range(3):
            loss = F.cross_entropy(functional_call(model.net, w, (x,)), y)
            g = torch.autograd.grad(loss, list(w.values()))
            w = {n: (t - 0.1 * gi).detach().requires_grad_()
                 for (n, t), gi in zip(w.items(), g, strict=True)}
        targets.append(w)
    phi = {n: torch.stack([t[n] for t in targets]).mean(0) for n in theta}
    # One outer step of plain SGD with lr = epsilon is theta + epsilon * (phi - theta).
    epsilon = 0.7
    outer = torch.optim.SGD(model.parameters(), lr=epsilon)
    outer.zero_grad()
    out = model.meta_train_step(batch)
    out.loss.backward()
    outer.step()
    for n, p in model.net.named_parameters():
        torch.testing.assert_close(p.detach(), theta[n] + epsilon * (phi[n] - theta[n]))
    # the logged loss: the mean over tasks of each one's 0.5 * ||theta - phi||^2
    distances = [0.5 * sum(float((theta[n] - w[n].detach()).pow(2).sum()) for n in theta)
                 for w in targets]
    assert out.loss.item() == pytest.approx(sum(distances) / len(distances), rel=1e-9)


def test_reptile_adam_inner_step_and_module_left_alone() -> None:
    torch.manual_seed(0)
    model = Reptile(Tiny(), ways=WAYS, inner_lr=0.01, inner_steps=1, bn_mode="running").double()
    task = _batch()[0]
    before = {n: p.detach().clone() for n, p in model.net.named_parameters()}
    phi = model.fine_tune(task.support_x, task.support_y, steps=1, lr=0.01)
    assert all(torch.equal(before[n], p) for n, p in model.net.named_parameters())
    # Adam's first step (bias-corrected, beta1 = 0) is lr * sign(gradient) for every element.
    loss = F.cross_entropy(model.net(task.support_x), task.support_y)
    grads = dict(zip(before, torch.autograd.grad(loss, list(model.net.parameters())),
                     strict=True))
    for n in before:
        torch.testing.assert_close(phi[n], before[n] - 0.01 * grads[n].sign(), atol=1e-6,
                                   rtol=0)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_reptile_fine_tunes_as_torch_optimizers_do(optimizer: str) -> None:
    """Reptile's inner loop is the shared one with Adam's directions (or the gradients'): five
    steps of it equal five of ``torch.optim.Adam`` with ``beta1 = 0`` (``SGD``) on the same
    loss."""
    torch.manual_seed(0)
    model = Reptile(Tiny(), ways=WAYS, inner_optimizer=optimizer, bn_mode="running").double()
    task = _batch()[0]
    phi = model.fine_tune(task.support_x, task.support_y, steps=5, lr=0.05)
    weights = {n: p.detach().clone().requires_grad_() for n, p in model.net.named_parameters()}
    opt = (torch.optim.Adam(weights.values(), lr=0.05, betas=(0.0, 0.999))
           if optimizer == "adam" else torch.optim.SGD(weights.values(), lr=0.05))
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(functional_call(model.net, weights, (task.support_x,)),
                        task.support_y).backward()
        opt.step()
    for n, w in weights.items():
        assert not torch.allclose(w, dict(model.net.named_parameters())[n])  # they moved
        torch.testing.assert_close(phi[n], w.detach(), rtol=1e-12, atol=1e-12)


def test_a_carried_adam_state_goes_from_task_to_task_as_one_torch_adam() -> None:
    """With ``carry_adam_state`` the meta-batch's tasks fine-tune as the reference code does:
    one ``torch.optim.Adam`` (``beta1 = 0``) for the whole run, the weights (not the optimizer)
    reset to the initialisation before each task; meta-test starts from that state and leaves
    it alone. The state is in the checkpointed state dict."""
    torch.manual_seed(0)
    model = Reptile(Tiny(), ways=WAYS, inner_lr=0.05, inner_steps=3, bn_mode="running",
                    carry_adam_state=True).double()
    batch = _batch(tasks=2)
    theta = {n: p.detach().clone() for n, p in model.net.named_parameters()}
    weights = {n: p.clone().requires_grad_() for n, p in theta.items()}
    opt = torch.optim.Adam(weights.values(), lr=0.05, betas=(0.0, 0.999))

    def train(x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
        for w, start in zip(weights.values(), theta.values(), strict=True):
            w.data.copy_(start)
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(functional_call(model.net, weights, (x,)), y).backward()
            opt.step()

    model.meta_train_step(batch)
    for task in batch:
        train(torch.cat([task.support_x, task.query_x]), torch.cat([task.support_y,
                                                                    task.query_y]), 3)
    assert int(model.carried.steps) == 6
    for n, w in weights.items():
        torch.testing.assert_close(getattr(model.carried, model.carried._key(n)),
                                   opt.state[w]["exp_avg_sq"], rtol=1e-12, atol=1e-15)
    kept = {k: b.clone() for k, b in model.carried.state_dict().items()}
    task = batch[0]
    phi = model.fine_tune(task.support_x, task.support_y, steps=2, lr=0.05)
    train(task.support_x, task.support_y, 2)  # torch's Adam goes on from the same state
    for n, w in weights.items():
        torch.testing.assert_close(phi[n], w.detach(), rtol=1e-12, atol=1e-12)
    assert all(torch.equal(kept[k], b) for k, b in model.carried.state_dict().items())
    assert {f"carried.{k}" for k in kept} <= set(model.state_dict())
    fresh = model.fine_tune(task.support_x, task.support_y, steps=2, lr=0.05,
                            directions=AdamDirections())
    assert not all(torch.allclose(fresh[n], phi[n]) for n in phi)


@pytest.mark.parametrize("settings", [{"vectorize": True}, {"inner_optimizer": "sgd"}])
def test_a_carried_adam_state_needs_adam_tasks_in_order(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="algo.carry_adam_state carries an Adam state"):
        Reptile(Tiny(), ways=WAYS, carry_adam_state=True, **settings)  # type: ignore[arg-type]


def test_adam_directions_under_vmap_match_the_loop() -> None:
    """The tasks of a batch fine-tuned together under ``torch.func.vmap`` with Adam's
    directions reach each task's own weights."""
    torch.manual_seed(0)
    model = Reptile(Tiny(), ways=WAYS, bn_mode="running").double()
    batch = _batch()
    start = {n: p.detach() for n, p in model.net.named_parameters()}

    def adapted(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return inner_trajectory(model.net, start, x, y, F.cross_entropy, steps=3, lr=0.05,
                                create_graph=False, functional=True,
                                directions=AdamDirections())[-1]

    together = torch.func.vmap(adapted)(batch.support_x, batch.support_y)
    for i, task in enumerate(batch):
        alone = model.fine_tune(task.support_x, task.support_y, steps=3, lr=0.05)
        for n in alone:
            torch.testing.assert_close(together[n][i], alone[n])


def test_an_inner_loop_with_directions_is_not_checkpointed() -> None:
    model = Tiny()
    x, y = torch.randn(4, DIM), torch.arange(4) % WAYS
    with pytest.raises(ValueError, match="cannot be checkpointed"):
        inner_trajectory(model, dict(model.named_parameters()), x, y, F.cross_entropy, steps=1,
                         lr=0.1, create_graph=False, checkpoint=True,
                         directions=AdamDirections())
