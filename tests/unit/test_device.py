from __future__ import annotations

import pytest
import torch

from metarun.cli.common import expand_device_shorthand
from metarun.device import DeviceUnavailableError, resolve_device


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_without_cuda_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch, 0)
    for spec in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(DeviceUnavailableError, match="CUDA is not available.*device=cpu"):
            resolve_device(spec)


def test_auto_without_cuda_is_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch, 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_index(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch, 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(DeviceUnavailableError, match="only 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["gpu", "cpu:1", "cuda:x", "", "mps:0"])
def test_malformed_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device(spec)


def test_device_shorthand() -> None:
    assert expand_device_shorthand(["device=cuda:1", "seed=2"]) == [
        "device=cuda", "device.name=cuda:1", "seed=2"]
    assert expand_device_shorthand(["device=cuda:0,cuda:1"]) == [
        "device=cuda", "device.name=cuda:0,cuda:1"]
    assert expand_device_shorthand(["device=cpu"]) == ["device=cpu"]


@pytest.mark.cuda
def test_real_cuda() -> None:
    device = resolve_device("cuda")
    assert torch.zeros(1, device=device).device.type == "cuda"
