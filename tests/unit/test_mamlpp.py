"""MAML++: each of its switches does what the paper says, on small models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metarun.algorithms.functional import forward, inner_trajectory
from metarun.algorithms.mamlpp import MAMLpp, msl_weights
from tests.unit.test_maml import DIM, WAYS, Tiny, _batch


class TinyBN(nn.Module):
    """Linear, batch norm, tanh: enough to see per-step batch-norm weights and statistics."""

    out_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(DIM, self.out_dim)
        self.bn = nn.BatchNorm1d(self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.bn(self.fc(x.flatten(1))))


def _model(backbone: nn.Module | None = None, **kwargs: object) -> MAMLpp:
    torch.manual_seed(0)
    options: dict[str, object] = {
        "inner_lr": 0.3, "inner_steps": 3, "test_inner_steps": 3, "multi_step_loss": False,
        "learn_inner_lrs": False, "per_step_bn_weights": False, "per_step_bn_stats": False,
        "first_order_epochs": 0, "epoch_steps": 2, "bn_mode": "running", **kwargs,
    }
    return MAMLpp(backbone or Tiny(), ways=WAYS, **options).double()  # type: ignore[arg-type]


def _meta_grad(model: MAMLpp) -> torch.Tensor:
    model.zero_grad()
    model.meta_train_step(_batch()).loss.backward()
    return torch.cat([torch.zeros_like(p).flatten() if p.grad is None else p.grad.flatten()
                      for p in model.parameters()])


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_msl_weights_sum_to_one_and_anneal_to_the_last_step(steps: int) -> None:
    epochs = 10
    history = torch.stack([msl_weights(steps, e, epochs) for e in range(epochs + 3)])
    torch.testing.assert_close(history.sum(1), torch.ones(epochs + 3, dtype=torch.float64))
    torch.testing.assert_close(history[0], torch.full((steps,), 1.0 / steps,
                                                      dtype=torch.float64))
    assert history[epochs:, -1].eq(1).all() and history[epochs:, :-1].eq(0).all()
    if steps > 1:
        # Non-final weights never grow and stay above the paper's floor of 0.03 / steps
        # while annealing; the final one never shrinks.
        assert (history[1:epochs, :-1] <= history[:epochs - 1, :-1]).all()
        assert (history[:epochs, :-1] >= 0.03 / steps - 1e-12).all()
        assert (history[1:, -1] >= history[:-1, -1]).all()
        # Halfway: each non-final weight has lost half of its 1/steps.
        torch.testing.assert_close(msl_weights(steps, 5, 10)[0],
                                   torch.tensor(0.5 / steps, dtype=torch.float64))


def test_multi_step_loss_is_the_weighted_sum_over_steps() -> None:
    model = _model(multi_step_loss=True, msl_epochs=4)
    model.scheduled(1)  # epoch 0: uniform weights
    task = _batch()[0]
    loss, _ = model.task_loss(task.support_x, task.support_y, task.query_x, task.query_y)
    params = dict(model.net.named_parameters())
    trajectory = inner_trajectory(model.net, params, task.support_x, task.support_y,
                                  model.task_type.loss, 3, 0.3, create_graph=True)
    losses = [model.task_type.loss(forward(model.net, w, task.query_x), task.query_y)
              for w in trajectory[1:]]
    torch.testing.assert_close(loss, sum(losses) / 3)
    model.scheduled(4 * 2 + 1)  # epoch 4 = msl_epochs: the last step alone
    loss, _ = model.task_loss(task.support_x, task.support_y, task.query_x, task.query_y)
    torch.testing.assert_close(loss, losses[-1])


def test_derivative_order_annealing_switches_at_the_configured_epoch() -> None:
    annealed = _model(first_order_epochs=2)
    first, second = _model(first_order=True), _model()
    for step, order in [(1, 1), (4, 1), (5, 2), (9, 2)]:  # epoch_steps=2: epoch 2 starts at 5
        annealed.scheduled(step)
        assert annealed._create_graph() is (order == 2)
        reference = first if order == 1 else second
        torch.testing.assert_close(_meta_grad(annealed), _meta_grad(reference))
    assert not torch.allclose(_meta_grad(first), _meta_grad(second))


def test_learned_per_layer_per_step_lrs_get_gradients_and_apply_per_step() -> None:
    model = _model(learn_inner_lrs=True)
    assert {k: tuple(v.shape) for k, v in model.inner_lrs.items()} == {
        "0-fc-weight": (3,), "0-fc-bias": (3,), "1-weight": (3,), "1-bias": (3,)}
    _meta_grad(model)
    for lrs in model.inner_lrs.values():
        assert lrs.grad is not None and (lrs.grad != 0).all()  # every step's lr matters
    # Changing the head's lr of step 2 (index 1) leaves step 1 alone and changes step 2.
    task = _batch()[0]
    params = {k: v.detach() for k, v in model.net.named_parameters()}

    def trajectory() -> list[dict[str, torch.Tensor]]:
        return inner_trajectory(model.net, {k: v.requires_grad_() for k, v in params.items()},
                                task.support_x, task.support_y, model.task_type.loss, 3,
                                model._step_size(True), create_graph=False)

    before = trajectory()
    with torch.no_grad():
        model.inner_lrs["1-weight"][1] = 0.0
    after = trajectory()
    torch.testing.assert_close(after[1]["1.weight"], before[1]["1.weight"])
    torch.testing.assert_close(after[2]["1.weight"], after[1]["1.weight"])  # lr 0: no move
    assert not torch.allclose(after[2]["1.weight"], before[2]["1.weight"])


def test_per_step_batch_norm_weights_are_meta_learned_not_adapted() -> None:
    model = _model(TinyBN(), per_step_bn_weights=True)
    assert set(model._adapted(model.net)) == {"0.fc.weight", "0.fc.bias", "1.weight", "1.bias"}
    assert model.bn_weights["0-bn-weight"].shape == (3, 4)
    _meta_grad(model)
    assert model.bn_weights["0-bn-weight"].grad.abs().sum(1).gt(0).all()  # each step's
    assert model.net[0].bn.weight.grad is None  # the shared ones are not used


def test_per_step_batch_norm_statistics_are_tracked_per_step() -> None:
    model = _model(TinyBN(), per_step_bn_stats=True)
    shared = model.net[0].bn.running_mean.clone()
    stats = model.get_buffer("step_0-bn-running_mean")
    assert stats.shape == (3, 4) and stats.eq(0).all()
    model.meta_train_step(_batch())
    assert torch.equal(model.net[0].bn.running_mean, shared)  # the shared ones are untouched
    assert stats.ne(0).all()
    assert not torch.allclose(stats[0], stats[1]) and not torch.allclose(stats[1], stats[2])
    # At meta-test in running mode the prediction after step k uses step k's statistics.
    task = _batch()[0]
    before = model.adapt(task.support_x, task.support_y)(task.query_x)
    with torch.no_grad():
        stats[2] += 1.0
    assert not torch.allclose(before, model.adapt(task.support_x, task.support_y)(task.query_x))


def test_state_dict_round_trips_every_per_step_tensor() -> None:
    model = _model(TinyBN(), per_step_bn_stats=True, per_step_bn_weights=True,
                   learn_inner_lrs=True)
    model.meta_train_step(_batch())
    copy = _model(TinyBN(), per_step_bn_stats=True, per_step_bn_weights=True,
                  learn_inner_lrs=True)
    with torch.no_grad():
        for lrs in model.inner_lrs.values():
            lrs.add_(0.01)
    copy.load_state_dict(model.state_dict())
    for (name, a), b in zip(model.state_dict().items(), copy.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("key", ["msl_epochs", "epoch_steps"])
def test_schedule_lengths_must_be_positive(key: str) -> None:
    with pytest.raises(ValueError, match=f"algo.{key}"):
        _model(**{key: 0})
