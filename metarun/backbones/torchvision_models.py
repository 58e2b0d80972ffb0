"""Any torchvision classification model as a backbone, by name, its classifier removed.

``backbone=torchvision backbone.name=resnet18`` builds ``torchvision.models.get_model(name)``
and replaces its last classification layer (``fc``, ``classifier``, ``heads`` or ``head``) by
the identity; ``out_dim`` is measured by one forward pass at the dataset's input shape. Grey
(one-channel) images are repeated to three channels. ``backbone.weights``: ``null`` (random
initialisation), a local file of weights (a state dict, read with ``weights_only``; classifier
weights in it are ignored), or a torchvision weights name (``IMAGENET1K_V1``, or in full
``ResNet18_Weights.IMAGENET1K_V1``), which torchvision downloads into its cache once.

Batch norm here is ``nn.BatchNorm2d``: fine for every algorithm looped over tasks (the
default); ``algo.vectorize`` (vmap) with MAML-style adapted batch-norm weights needs the
project's own :class:`~metarun.backbones.norm.BatchNorm2d`, as Conv-4 and ResNet-12 use.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from metarun.types import Backbone

_HEADS = ("fc", "classifier", "heads", "head")


class TorchvisionBackbone(Backbone):
    """A torchvision model without its classifier (see the module docstring).

    Args:
        input_shape: ``(C, H, W)`` of the input images (from the dataset).
        name: a model name of ``torchvision.models.list_models()``.
        weights: ``null``, a file of weights, or a torchvision weights name.
    """

    def __init__(self, input_shape: tuple[int, int, int], name: str = "resnet18",
                 weights: str | None = None) -> None:
        super().__init__()
        from torchvision import models

        self.input_shape = tuple(int(v) for v in input_shape)
        if self.input_shape[0] not in (1, 3):
            raise ValueError(f"torchvision models take 1- or 3-channel images; got "
                             f"{self.input_shape[0]}")
        known = models.list_models(module=models)
        if name not in known:
            raise ValueError(f"backbone.name must be a torchvision classification model (e.g. "
                             f"resnet18, resnet50, vit_b_16); got {name!r}")
        named = weights is not None and not _is_file(weights)
        model = _build(name, _named_weights(name, weights) if weights and named else None)
        self.model = _without_head(model, name)
        if weights is not None and not named:
            _load_file(self.model, weights)
        self.out_dim = _out_dim(self.model, self.input_shape)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` images to ``[B, out_dim]`` embeddings."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        out: Tensor = self.model(x)
        return out.flatten(1)


def _is_file(weights: str) -> bool:
    return os.path.sep in weights or weights.endswith((".pth", ".pt", ".bin")) or \
        os.path.isfile(os.path.expanduser(weights))


def _named_weights(name: str, weights: str) -> Any:
    from torchvision import models

    try:
        enum = models.get_model_weights(name)
        member = weights.rsplit(".", 1)[-1]
        return enum[member]
    except (KeyError, ValueError):
        raise ValueError(f"backbone.weights={weights!r} is neither a file nor one of {name}'s "
                         f"torchvision weights") from None


def _build(name: str, weights: Any) -> nn.Module:
    from torchvision import models

    try:
        return models.get_model(name, weights=weights)
    except OSError as e:  # no network, a proxy page, a full disk: the fetch of named weights
        raise OSError(f"backbone.weights={weights}: torchvision could not fetch them ({e}); "
                      f"download {weights.url} elsewhere and pass its path as backbone.weights"
                      ) from None


def _without_head(model: nn.Module, name: str) -> nn.Module:
    for attr in _HEADS:
        if isinstance(getattr(model, attr, None), nn.Module):
            setattr(model, attr, nn.Identity())
            return model
    raise ValueError(f"torchvision's {name} has no classifier metarun knows how to remove "
                     f"(looked for {', '.join(_HEADS)})")


def _load_file(model: nn.Module, path: str) -> None:
    file = os.path.expanduser(path)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"backbone.weights: no such file {file}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise ValueError(f"backbone.weights: {file} is not a torch state dict "
                         f"({type(e).__name__})") from None
    state = {k: v for k, v in state.items() if not k.startswith(_HEADS)}
    try:
        missing, _ = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches, listed over many lines
        first = str(e).strip().splitlines()[-1].strip()
        raise ValueError(f"backbone.weights: {file} does not fit the model ({first}); it is "
                         "not this model's weights") from None
    if missing:
        raise ValueError(f"backbone.weights: {file} lacks {len(missing)} of the model's tensors "
                         f"(e.g. {missing[0]}); it is not this model's weights")


def _out_dim(model: nn.Module, shape: tuple[int, ...]) -> int:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, *shape[1:]))
    model.train(was_training)
    return int(out.flatten(1).shape[1])
