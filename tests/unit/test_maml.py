"""MAML's meta-gradient, both orders, against independent computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metarun.algorithms.functional import inner_trajectory
from metarun.algorithms.maml import MAML
from metarun.types import EpisodeBatch, EpisodeData

WAYS, SHOTS, QUERIES, DIM = 3, 2, 4, 5


class Tiny(nn.Module):
    """A smooth backbone without batch norm, so gradients are exact functions of the weights."""

    out_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(DIM, self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x.flatten(1)))


def _batch(tasks: int = 2, seed: int = 0) -> EpisodeBatch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(WAYS)
    return EpisodeBatch(
        support_x=torch.randn(tasks, WAYS * SHOTS, DIM, generator=g, dtype=torch.float64),
        support_y=labels.repeat_interleave(SHOTS).expand(tasks, -1),
        query_x=torch.randn(tasks, WAYS * QUERIES, DIM, generator=g, dtype=torch.float64),
        query_y=labels.repeat_interleave(QUERIES).expand(tasks, -1),
        class_ids=labels.expand(tasks, -1),
    )


def _maml(first_order: bool, steps: int = 2, head: str = "learned") -> MAML:
    torch.manual_seed(0)
    return MAML(Tiny(), ways=WAYS, inner_lr=0.5, inner_steps=steps, first_order=first_order,
                bn_mode="running", head=head).double()


def _meta_grad(model: MAML, batch: EpisodeBatch) -> torch.Tensor:
    model.zero_grad()
    model.meta_train_step(batch).loss.backward()
    return torch.cat([torch.zeros_like(p).flatten() if p.grad is None else p.grad.flatten()
                      for p in model.parameters()])


@pytest.mark.parametrize(("steps", "head"), [(1, "learned"), (2, "learned"), (2, "zero")])
def test_second_order_matches_finite_differences(steps: int, head: str) -> None:
    model, batch = _maml(first_order=False, steps=steps, head=head), _batch()
    analytic = _meta_grad(model, batch)
    params = list(model.parameters())
    numeric, eps = [], 1e-6
    with torch.no_grad():
        for p in params:
            flat = p.view(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                flat[i] = old + eps
                up = model.meta_train_step(batch).loss.item()
                flat[i] = old - eps
                down = model.meta_train_step(batch).loss.item()
                flat[i] = old
                numeric.append((up - down) / (2 * eps))
    torch.testing.assert_close(analytic, torch.tensor(numeric, dtype=torch.float64),
                               rtol=1e-5, atol=1e-7)


def test_first_order_is_query_gradient_at_adapted_weights() -> None:
    model, batch = _maml(first_order=True), _batch()
    analytic = _meta_grad(model, batch)
    # Independent: plain SGD on detached copies, then the query gradient at the result.
    expected = torch.zeros_like(analytic)
    for task in batch:
        fast = {k: v.detach().clone().requires_grad_() for k, v in model.net.named_parameters()}
        for _ in range(model.inner_steps):
            loss = F.cross_entropy(functional_call(model.net, fast, (task.support_x,)),
                                   task.support_y)
            grads = torch.autograd.grad(loss, list(fast.values()))
            fast = {k: (v - 0.5 * g).detach().requires_grad_()
                    for (k, v), g in zip(fast.items(), grads, strict=True)}
        q = F.cross_entropy(functional_call(model.net, fast, (task.query_x,)), task.query_y)
        expected += torch.cat([g.flatten() for g in torch.autograd.grad(q, list(fast.values()))])
    torch.testing.assert_close(analytic, expected / len(batch), rtol=1e-10, atol=1e-12)


def test_orders_differ() -> None:
    batch = _batch()
    second, first = _meta_grad(_maml(False), batch), _meta_grad(_maml(True), batch)
    assert not torch.allclose(second, first, rtol=1e-3)


def test_first_order_steps_are_first_order_then_second_order() -> None:
    batch = _batch()
    second, first = _meta_grad(_maml(False), batch), _meta_grad(_maml(True), batch)
    torch.manual_seed(0)
    annealed = MAML(Tiny(), ways=WAYS, inner_lr=0.5, inner_steps=2, bn_mode="running",
                    first_order_steps=3).double()
    assert annealed.second_order  # what precision and compile checks read: it ends second order
    for step, expected in [(1, first), (3, first), (4, second), (9, second)]:
        annealed.scheduled(step)
        torch.testing.assert_close(_meta_grad(annealed, batch), expected)


def test_a_negative_first_order_steps_is_refused() -> None:
    with pytest.raises(ValueError, match="algo.first_order_steps"):
        MAML(Tiny(), ways=WAYS, first_order_steps=-1)


def test_inner_loop_is_gradient_descent_on_a_quadratic() -> None:
    # f(w) = 0.5 * ||A w - b||^2 as "loss_fn(prediction, target)": one step is w - lr * A^T(Aw - b).
    torch.manual_seed(0)
    module = nn.Linear(3, 2, bias=False).double()
    x = torch.eye(3, dtype=torch.float64)
    target = torch.randn(3, 2, dtype=torch.float64)

    def loss_fn(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * (pred - y).pow(2).sum()

    w = module.weight.detach().clone()
    fast = inner_trajectory(module, dict(module.named_parameters()), x, target, loss_fn,
                            steps=1, lr=0.1, create_graph=False)[-1]
    expected = w - 0.1 * (x @ w.T - target).T @ x
    torch.testing.assert_close(fast["weight"], expected)


def test_adaptation_leaves_meta_parameters_alone() -> None:
    model, batch = _maml(False), _batch()
    before = [p.detach().clone() for p in model.parameters()]
    logits = model.adapt(batch.support_x[0], batch.support_y[0])(batch.query_x[0])
    assert logits.shape == (WAYS * QUERIES, WAYS)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_wrong_way_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="only be evaluated on 3-way"):
        _maml(False).check_task(5)


def test_a_zero_head_starts_every_task_from_zeros() -> None:
    """The zeroing trick: the head's first inner step makes class c's weights
    lr * mean over the support set of (1[y = c] - 1/ways) * features, a prototype classifier;
    the head's own parameters get a zero meta-gradient and stay zero."""
    model, batch = _maml(False, steps=1, head="zero"), _batch()
    head = model.net[1]
    assert not head.weight.any() and not head.bias.any()
    task = next(iter(batch))
    fast = inner_trajectory(model.net, model._start(model.net), task.support_x, task.support_y,
                            F.cross_entropy, steps=1, lr=0.5, create_graph=False)[-1]
    features = model.net[0](task.support_x)
    target = F.one_hot(task.support_y, WAYS).double() - 1 / WAYS
    torch.testing.assert_close(fast["1.weight"], 0.5 * target.T @ features / len(features))
    model.meta_train_step(batch).loss.backward()
    assert not head.weight.grad.any() and not head.bias.grad.any()
    assert model.net[0].fc.weight.grad.abs().max() > 0


def test_zero_init_head_is_meta_learned_from_zeros() -> None:
    model, batch = _maml(False, head="zero_init"), _batch()
    assert not model.net[1].weight.any()
    model.meta_train_step(batch).loss.backward()
    assert model.net[1].weight.grad.abs().max() > 0


def test_an_unknown_head_is_refused() -> None:
    with pytest.raises(ValueError, match="algo.head must be one of"):
        _maml(False, head="random")


def test_train_queries_change_the_training_episodes_only() -> None:
    """algo.train_queries (Finn et al.'s code trains Omniglot MAML on one query per class);
    meta-test keeps eval.queries."""
    task = EpisodeData(5, 1, 15)
    assert MAML(Tiny(), 5).training_data(task) == task
    assert MAML(Tiny(), 5, train_queries=1).training_data(task) == \
        EpisodeData(5, 1, 1)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="algo.train_queries must be a positive integer"):
            MAML(Tiny(), 5, train_queries=bad)  # type: ignore[arg-type]
