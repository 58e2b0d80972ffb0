"""The image backbones: output sizes, parameter counts, and every algorithm taking a step with
ResNet-12 on 84x84 images (generated miniImageNet files in the real pickle layout)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metarun import build
from metarun.backbones.conv4 import Conv4
from metarun.backbones.resnet import ResNet12, WideResNet
from metarun.backbones.torchvision_models import TorchvisionBackbone
from metarun.configs import config_dir
from metarun.types import Split
from tests import benchmark_files as files
from tests.helpers import compose_config

ALGORITHMS = sorted(p.stem for p in (Path(config_dir()) / "algo").glob("*.yaml"))


@pytest.mark.parametrize(("make", "shape", "out_dim", "params"), [
    (lambda s: ResNet12(s), (3, 84, 84), 640, 12_424_320),  # MetaOptNet's: 12.4M
    (lambda s: ResNet12(s), (3, 32, 32), 640, 12_424_320),
    (lambda s: WideResNet(s), (3, 84, 84), 640, 36_472_784),  # WRN-28-10: 36.5M
    (lambda s: Conv4(s), (3, 84, 84), 1600, 113_088),  # 64 x 5 x 5 at 84x84
    # conv (9 weights + bias per filter) and batch norm (scale, shift) in each of 4 blocks
    (lambda s: Conv4(s, hidden=32), (1, 28, 28), 32,
     (9 + 1) * 32 + 2 * 32 + 3 * ((32 * 9 + 1) * 32 + 2 * 32)),
    # MAML's Omniglot network: the same weights, strided, averaged to `hidden` at any size
    (lambda s: Conv4(s, downsample="stride"), (3, 84, 84), 64, 113_088),
    (lambda s: Conv4(s, hidden=32, downsample="stride"), (1, 28, 28), 32,
     (9 + 1) * 32 + 2 * 32 + 3 * ((32 * 9 + 1) * 32 + 2 * 32)),
    (lambda s: TorchvisionBackbone(s, "resnet18"), (3, 84, 84), 512, 11_176_512),
    (lambda s: TorchvisionBackbone(s, "resnet18"), (1, 28, 28), 512, 11_176_512),
], ids=["resnet12-84", "resnet12-32", "wrn28_10", "conv4-84", "conv4-32f", "conv4-stride-84",
        "conv4-stride-32f", "resnet18", "resnet18-grey"])
def test_output_size_and_parameter_count(make, shape, out_dim: int,  # type: ignore[no-untyped-def]
                                         params: int) -> None:
    model = make(shape).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, *shape))
    assert out.shape == (2, out_dim) and model.out_dim == out_dim
    assert sum(p.numel() for p in model.parameters()) == params


def test_torchvision_weights_from_a_file_and_clear_errors(tmp_path: Path) -> None:
    source = TorchvisionBackbone((3, 32, 32), "resnet18")
    path = tmp_path / "weights.pth"
    torch.save(source.model.state_dict(), path)
    loaded = TorchvisionBackbone((3, 32, 32), "resnet18", weights=str(path))
    assert torch.equal(loaded.model.conv1.weight, source.model.conv1.weight)
    with pytest.raises(ValueError, match="must be a torchvision classification model"):
        TorchvisionBackbone((3, 32, 32), "resnet19")
    with pytest.raises(ValueError, match="neither a file nor one of resnet18's"):
        TorchvisionBackbone((3, 32, 32), "resnet18", weights="IMAGENET9K")
    with pytest.raises(FileNotFoundError, match="no such file"):
        TorchvisionBackbone((3, 32, 32), "resnet18", weights=str(tmp_path / "none.pth"))
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="it is not this model's weights"):
        TorchvisionBackbone((3, 32, 32), "resnet18", weights=str(path))


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mini84")
    files.write_mini_pickles(root, per_class=2)
    return root


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_every_algorithm_takes_a_step_with_resnet12_on_84px(algo: str, mini_root: Path) -> None:
    cfg = compose_config(f"algo={algo}", "data=mini_imagenet", "backbone=resnet12",
                         f"data.root={mini_root}",
                         f"data.cache_dir={mini_root / 'cache'}", "task.ways=2",
                         "task.shots=1", "task.queries=1", "device=cpu")
    for key, small in (("batch_size", 4), ("pairs", 4), ("inner_steps", 1)):
        if key in cfg.algo:  # the smallest step of each kind: this checks shapes, not speed
            cfg.algo[key] = small
    data = build.dataset(cfg)
    assert tuple(data.input_shape) == (3, 84, 84)
    sources = build.splits(data, torch.device("cpu"))
    torch.manual_seed(0)
    learner = build.algorithm(cfg, data, build.train_classes(sources))
    sampler = build.train_sampler(learner, sources[Split.TRAIN], build.info(cfg).task)
    optimizer = build.optimizer(cfg, learner)
    before = [p.detach().clone() for p in learner.parameters()]
    output = learner.meta_train_step(sampler.sample(1, torch.Generator().manual_seed(0)))
    if output.loss.requires_grad:  # Reptile moves its weights inside the step
        output.loss.backward()
        optimizer.step()
    assert torch.isfinite(output.loss)
    changed = [not torch.equal(b, p) for b, p in zip(before, learner.parameters(), strict=True)]
    assert sum(changed) > len(changed) // 2, algo
