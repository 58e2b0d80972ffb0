"""Backbones and the batch-norm mode of meta-testing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metarun.algorithms.protonet import ProtoNet
from metarun.backbones.conv4 import Conv4


@pytest.mark.parametrize(("shape", "dim"), [((1, 28, 28), 64), ((3, 84, 84), 1600)])
def test_conv4_embedding_size(shape: tuple[int, int, int], dim: int) -> None:
    net = Conv4(shape)
    assert net.out_dim == dim
    assert net(torch.rand(2, *shape)).shape == (2, dim)


def test_conv4_rejects_too_many_layers_and_an_unknown_downsampling() -> None:
    with pytest.raises(ValueError, match="backbone.layers"):
        Conv4((1, 8, 8), layers=4)
    with pytest.raises(ValueError, match="backbone.downsample must be one of max_pool, stride"):
        Conv4((1, 28, 28), downsample="avg_pool")


def test_conv4_pools_in_its_first_blocks_only_and_says_its_feature_map() -> None:
    """The Relation Network's embedding: max-pool in the first two of four blocks."""
    net = Conv4((1, 28, 28), hidden=8, pooled_blocks=2)
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 2
    assert net.feature_shape == (8, 7, 7) and net.out_dim == 8 * 7 * 7
    x = torch.rand(3, 1, 28, 28)
    maps = net.features[:-1](x)  # before the flatten
    assert maps.shape == (3, 8, 7, 7)
    assert torch.equal(net(x), maps.flatten(1))
    assert Conv4((1, 28, 28)).feature_shape == (64, 1, 1)  # all four pool (the default)
    assert Conv4((1, 28, 28), downsample="stride").feature_shape is None  # averaged
    with pytest.raises(ValueError, match=r"backbone.pooled_blocks must be in \[0, "):
        Conv4((1, 28, 28), pooled_blocks=5)
    with pytest.raises(ValueError, match="pooled_blocks applies to backbone.downsample=max_pool"):
        Conv4((1, 28, 28), downsample="stride", pooled_blocks=2)


def test_strided_conv4_halves_the_resolution_in_every_block() -> None:
    """Finn et al.'s Omniglot network: 28 -> 14 -> 7 -> 4 -> 2, no max-pool, then the mean
    over the 2x2 positions."""
    net = Conv4((1, 28, 28), hidden=8, downsample="stride")
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    x = torch.rand(3, 1, 28, 28)
    sides = []
    for module in net.features:
        x = module(x)
        if isinstance(module, nn.ReLU):
            sides.append(x.shape[-1])
    assert sides == [14, 7, 4, 2] and x.shape == (3, 8)
    maps = net.features[:-2](torch.ones(2, 1, 28, 28))  # before the average and the flatten
    assert torch.allclose(net(torch.ones(2, 1, 28, 28)), maps.mean(dim=(2, 3)))


def _bn(model: torch.nn.Module) -> torch.nn.BatchNorm2d:
    return next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_bn_batch_mode_uses_task_statistics_and_leaves_running_stats() -> None:
    torch.manual_seed(0)
    model = ProtoNet(Conv4((1, 28, 28)), bn_mode="batch")
    model.train()
    bn = _bn(model)
    mean, count = bn.running_mean.clone(), int(bn.num_batches_tracked)
    x = torch.rand(10, 1, 28, 28) * 5 + 3  # far from the running statistics (0, 1)
    logits = model.adapt(x[:5], torch.arange(5))(x[5:])
    assert torch.equal(bn.running_mean, mean) and int(bn.num_batches_tracked) == count
    assert model.training and bn.track_running_stats  # modes restored afterwards
    with torch.no_grad():  # batch statistics: same as a train-mode forward
        expected = -torch.cdist(model.backbone(x[5:]), model.backbone(x[:5])) ** 2
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-3)


def test_bn_running_mode_uses_running_statistics() -> None:
    torch.manual_seed(0)
    batch_model = ProtoNet(Conv4((1, 28, 28)), bn_mode="batch")
    running_model = ProtoNet(Conv4((1, 28, 28)), bn_mode="running")
    running_model.load_state_dict(batch_model.state_dict())
    x = torch.rand(10, 1, 28, 28) * 5 + 3
    a = batch_model.adapt(x[:5], torch.arange(5))(x[5:])
    b = running_model.adapt(x[:5], torch.arange(5))(x[5:])
    running_model.eval()
    with torch.no_grad():
        expected = -torch.cdist(running_model.backbone(x[5:]),
                                running_model.backbone(x[:5])) ** 2
    torch.testing.assert_close(b, expected, rtol=1e-4, atol=1e-2)
    assert not torch.allclose(a, b)


def test_bad_bn_mode() -> None:
    with pytest.raises(ValueError, match="algo.bn_mode"):
        ProtoNet(Conv4((1, 28, 28)), bn_mode="frozen")


@pytest.mark.parametrize("momentum", [0.1, None])
def test_vmap_safe_batch_norm_matches_torch(momentum: float | None) -> None:
    from metarun.backbones.norm import BatchNorm2d

    torch.manual_seed(0)
    ours, theirs = BatchNorm2d(3, momentum=momentum), nn.BatchNorm2d(3, momentum=momentum)
    with torch.no_grad():
        for m in (ours, theirs):
            m.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
            m.bias.copy_(torch.tensor([0.1, 0.0, 3.0]))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for _ in range(3):  # training: batch statistics, running statistics updated alike
        x = torch.randn(4, 3, 5, 5)
        torch.testing.assert_close(ours(x), theirs(x))
    for a, b in zip(ours.buffers(), theirs.buffers(), strict=True):
        torch.testing.assert_close(a, b)
    ours.eval()
    theirs.eval()
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(ours(x), theirs(x))  # running statistics
    ours.track_running_stats = theirs.track_running_stats = False
    ours.train()
    theirs.train()
    torch.testing.assert_close(ours(x), theirs(x))
