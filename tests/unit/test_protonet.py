from __future__ import annotations

import torch
from torch import nn

from metarun.algorithms.protonet import ProtoNet, prototypes, squared_distances
from metarun.backbones.conv4 import Conv4


def test_prototypes_are_class_means() -> None:
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(12, 7, generator=g)
    labels = torch.tensor([2, 0, 1, 2, 2, 0, 1, 1, 0, 3, 3, 3])
    protos = prototypes(emb, labels, 4)
    for c in range(4):
        torch.testing.assert_close(protos[c], emb[labels == c].mean(0))


def test_squared_distances() -> None:
    a, b = torch.randn(5, 3), torch.randn(4, 3)
    torch.testing.assert_close(squared_distances(a, b), torch.cdist(a, b) ** 2, rtol=1e-4,
                               atol=1e-5)


def test_query_equal_to_support_is_classified_as_its_class() -> None:
    torch.manual_seed(0)
    model = ProtoNet(nn.Flatten())  # identity embedding
    support = torch.randn(5, 1, 4, 4)
    predict = model.adapt(support, torch.arange(5))
    logits = predict(support)
    assert logits.shape == (5, 5)
    assert torch.equal(logits.argmax(-1), torch.arange(5))


def test_meta_train_step_loss_is_differentiable() -> None:
    torch.manual_seed(0)
    from metarun.types import EpisodeBatch

    model = ProtoNet(Conv4((1, 28, 28)))
    labels = torch.arange(3)
    batch = EpisodeBatch(torch.rand(2, 3, 1, 28, 28), labels.expand(2, -1),
                         torch.rand(2, 6, 1, 28, 28), labels.repeat_interleave(2).expand(2, -1),
                         labels.expand(2, -1))
    out = model.meta_train_step(batch)
    out.loss.backward()
    assert 0.0 <= out.metrics["acc"] <= 1.0
    assert all(p.grad is not None for p in model.parameters())


def test_protonet_can_train_on_more_ways_than_it_is_tested_on() -> None:
    """algo.train_ways / train_queries change the training episodes only (Snell et al.'s
    60-way training for 5-way tests)."""
    import pytest

    from metarun.types import EpisodeData

    task = EpisodeData(5, 1, 15)
    assert ProtoNet(Conv4((1, 28, 28), hidden=8)).training_data(task) == task
    wide = ProtoNet(Conv4((1, 28, 28), hidden=8), train_ways=60, train_queries=5)
    assert wide.training_data(task) == EpisodeData(60, 1, 5)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="algo.train_ways must be a positive integer"):
            ProtoNet(Conv4((1, 28, 28), hidden=8), train_ways=bad)  # type: ignore[arg-type]


def test_metarun_eval_takes_a_divergence_bound() -> None:
    import pytest

    from metarun.validate import eval_overrides

    assert eval_overrides({"diverged_above": 2.5, "ways": None}, {}, None) == {
        "eval.diverged_above": 2.5}
    for bad in (-1.0, "x", float("inf")):
        with pytest.raises(ValueError, match="eval.diverged_above must be a finite number"):
            eval_overrides({"diverged_above": bad}, {}, None)
    assert eval_overrides({}, {"split": "lake"}, 3, {"test_inner_steps": 10}) == {
        "data.split": "lake", "seed": 3, "algo.test_inner_steps": 10}
    with pytest.raises(ValueError, match="algo._target_ cannot be changed"):
        eval_overrides({}, {}, None, {"_target_": "os.system"})
