"""Matching and Relation Networks: the properties that define each, on small models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metarun.algorithms.matchingnet import MatchingNet
from metarun.algorithms.relationnet import RelationNet
from metarun.backbones.conv4 import Conv4
from metarun.types import EpisodeBatch
from tests.helpers import random_image_batch

WAYS, SHOTS, QUERIES = 5, 1, 3


def _batch(tasks: int = 2, shots: int = SHOTS) -> EpisodeBatch:
    return random_image_batch(tasks, WAYS, shots, QUERIES)


@pytest.mark.parametrize("fce", [False, True])
def test_matching_attention_picks_the_identical_support_image(fce: bool) -> None:
    torch.manual_seed(0)
    model = MatchingNet(Conv4((1, 28, 28), hidden=16), fce=fce)
    task = _batch()[0]
    order = torch.tensor([3, 0, 4, 1, 2])  # query i is support image order[i]
    logp = model.adapt(task.support_x, task.support_y)(task.support_x[order])
    assert logp.shape == (WAYS, WAYS)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(WAYS))  # log-probabilities
    if not fce:  # cosine similarity 1 with itself: the largest attention weight
        assert torch.equal(logp.argmax(-1), task.support_y[order])


def test_matching_without_fce_ignores_the_support_order() -> None:
    torch.manual_seed(0)
    model = MatchingNet(Conv4((1, 28, 28), hidden=16)).eval()
    task = _batch()[0]
    perm = torch.randperm(WAYS)
    a = model.adapt(task.support_x, task.support_y)(task.query_x)
    b = model.adapt(task.support_x[perm], task.support_y[perm])(task.query_x)
    torch.testing.assert_close(a, b)


def test_matching_without_query_normalisation_scales_the_attention_not_its_choice() -> None:
    """``normalize_query=False``: ``q . s / |s|``, the paper's cosines times the query's norm,
    a temperature of the softmax: a longer query attends more sharply, to the same support
    image; with the paper's cosines (the default) its length changes nothing."""
    torch.manual_seed(0)
    support_z, query_z = torch.randn(WAYS, 8), torch.randn(4, 8)
    labels = torch.arange(WAYS)  # one shot: attention weights are the class probabilities
    cosines = F.cosine_similarity(query_z[:, None], support_z[None], dim=-1)  # [4, WAYS]
    backbone = Conv4((1, 28, 28), hidden=16)
    paper, scaled = MatchingNet(backbone), MatchingNet(backbone, normalize_query=False)
    unit = query_z / query_z.norm(dim=-1, keepdim=True)
    for norm in (1.0, 3.0, 6.0):
        torch.testing.assert_close(paper.predict(support_z, labels, norm * unit, WAYS),
                                   cosines.log_softmax(-1))
        logp = scaled.predict(support_z, labels, norm * unit, WAYS)
        torch.testing.assert_close(logp, (norm * cosines).log_softmax(-1))
        assert torch.equal(logp.argmax(-1), cosines.argmax(-1))


def test_matching_trains_every_fce_parameter() -> None:
    torch.manual_seed(0)
    model = MatchingNet(Conv4((1, 28, 28), hidden=16), fce=True, fce_steps=2)
    model.meta_train_step(_batch()).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _relation(relation: str) -> RelationNet:
    """The paper's embedding for ``conv`` (pooling in two blocks: 7x7 maps), else Conv-4's."""
    pooled = 2 if relation == "conv" else None
    return RelationNet(Conv4((1, 28, 28), hidden=16, pooled_blocks=pooled), hidden=8,
                       relation=relation)


@pytest.mark.parametrize("relation", ["mlp", "conv"])
@pytest.mark.parametrize("shots", [1, 3])
def test_relation_scores_lie_in_unit_interval_with_one_per_class(shots: int,
                                                                relation: str) -> None:
    torch.manual_seed(0)
    model = _relation(relation)
    task = _batch(shots=shots)[0]
    scores = model.adapt(task.support_x, task.support_y)(task.query_x)
    assert scores.shape == (WAYS * QUERIES, WAYS)
    assert ((scores >= 0) & (scores <= 1)).all()
    out = model.meta_train_step(_batch(shots=shots))
    out.loss.backward()
    assert 0 <= out.metrics["acc"] <= 1
    assert all(p.grad is not None for p in model.relation.parameters())


def test_relation_loss_is_mse_against_one_hot() -> None:
    scores = torch.tensor([[0.9, 0.2], [0.4, 0.6]])
    relation = RelationNet(Conv4((1, 28, 28), hidden=8))
    loss, acc = relation.loss_and_score(scores, torch.tensor([0, 0]))
    torch.testing.assert_close(loss, torch.tensor((0.01 + 0.04 + 0.36 + 0.36) / 4))
    assert acc == 0.5


def test_conv_relation_scores_each_concatenated_pair_of_feature_maps() -> None:
    """The paper's module convolves the concatenation [class map, query map] of every pair;
    metarun convolves the class and query maps apart and adds them (linearity): the scores
    must be those of the pairs, concatenated and passed through the module layer by layer."""
    torch.manual_seed(0)
    model = _relation("conv").eval()  # running statistics: every pair scored on its own
    relation = model.relation
    for m in relation.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    classes, queries = torch.rand(WAYS, 16 * 7 * 7), torch.rand(4, 16 * 7 * 7)
    scores = relation(classes, queries)
    for q in range(4):
        for c in range(WAYS):
            pair = torch.cat([classes[c].view(16, 7, 7), queries[q].view(16, 7, 7)])[None]
            expected = relation.rest(relation.first(pair))
            torch.testing.assert_close(scores[q, c], expected[0, 0])
    assert scores.shape == (4, WAYS)


def test_conv_relation_needs_feature_maps_of_at_least_4x4() -> None:
    with pytest.raises(ValueError, match="algo.relation=conv convolves feature maps"):
        RelationNet(Conv4((1, 28, 28), hidden=8, downsample="stride"), relation="conv")
    with pytest.raises(ValueError, match="at least 4x4; the backbone's is 1x1"):
        RelationNet(Conv4((1, 28, 28), hidden=8), relation="conv")
    with pytest.raises(ValueError, match="algo.relation must be one of conv, mlp"):
        RelationNet(Conv4((1, 28, 28), hidden=8), relation="attention")
