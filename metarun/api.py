"""Use a meta-trained model from Python: load a checkpoint, adapt to a support set, predict.

Classification (Omniglot):

    >>> import metarun
    >>> learner = metarun.load("outputs/2026-11-23/12-00-00/checkpoints/best.pt")
    >>> support_x = learner.preprocess(support_images)      # PIL images or uint8 arrays
    >>> predict = learner.adapt(support_x, support_labels)  # labels 0..N-1
    >>> logits = predict(learner.preprocess(query_images))  # [n_query, N]

Regression (sinusoid): ``preprocess`` takes numbers, ``adapt`` takes targets ``[K]`` or
``[K, 1]``, and the predictor returns values ``[n_query, 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor

from metarun.algorithms.base import Algorithm, Predictor
from metarun.device import resolve_device
from metarun.engine.checkpoint import load_checkpoint

#: ``_target_`` values in a checkpoint's config must start with one of these.
ALLOWED_TARGETS = ("metarun.", "torch.", "torchvision.")


def check_targets(node: Any, where: str = "config") -> None:
    """Refuse a config whose ``_target_`` values point outside :data:`ALLOWED_TARGETS`.

    A checkpoint's config is data from a file; instantiating it blindly would run whatever
    callable it names.

    Raises:
        ValueError: naming the offending key and target.
    """
    if isinstance(node, (dict, DictConfig)):
        for key, value in node.items():
            if key == "_target_" and not str(value).startswith(ALLOWED_TARGETS):
                raise ValueError(
                    f"{where}._target_ = {value!r} is not allowed; targets must start with "
                    f"one of {', '.join(ALLOWED_TARGETS)}"
                )
            check_targets(value, f"{where}.{key!s}")
    elif isinstance(node, (list, tuple, ListConfig)):
        for i, value in enumerate(node):
            check_targets(value, f"{where}[{i}]")


class Learner:
    """A meta-trained learner: preprocessing, adaptation and prediction on one device."""

    def __init__(self, algorithm: Algorithm, dataset: Any, device: torch.device,
                 config: DictConfig) -> None:
        self.algorithm = algorithm
        self.device = device
        self.config = config
        self._dataset = dataset

    def preprocess(self, images: Sequence[Any]) -> Tensor:
        """Raw inputs to model input with exactly the training preprocessing.

        Args:
            images: PIL images or uint8 arrays, in the dataset's raw form (for Omniglot: dark
                strokes on a light background); for the sinusoid, numbers.

        Returns:
            ``[B, C, H, W]`` (sinusoid: ``[B, 1]``) float tensor on the learner's device.
        """
        return self._dataset.preprocess(images).to(self.device)

    def adapt(self, support_x: Tensor,
              support_y: Tensor | Sequence[int] | Sequence[float]) -> Predictor:
        """Adapt to a support set; the returned predictor maps query inputs to predictions.

        Args:
            support_x: ``[N*K, C, H, W]`` images (regression: ``[K, D_in]``), e.g. from
                :meth:`preprocess`.
            support_y: classification: ``[N*K]`` labels in ``0..N-1``, every label present
                (the predictor returns logits ``[n_query, N]``); regression: ``[K]`` or
                ``[K, D_out]`` targets (the predictor returns values ``[n_query, D_out]``).
        """
        if self.algorithm.task_type.name == "regression":
            targets = torch.as_tensor(support_y, dtype=torch.float32, device=self.device)
            targets = targets[:, None] if targets.dim() == 1 else targets
            if len(targets) != len(support_x):
                raise ValueError("support_y must hold one target per support input")
            return self.algorithm.adapt(support_x.to(self.device), targets)
        labels = torch.as_tensor(support_y, dtype=torch.long, device=self.device)
        ways = int(labels.max()) + 1 if labels.numel() else 0
        if labels.numel() != len(support_x) or labels.min() < 0 or \
                set(labels.tolist()) != set(range(ways)):
            raise ValueError("support_y must hold one label per support image, covering "
                             "0..N-1 with every label present")
        return self.algorithm.adapt(support_x.to(self.device), labels)

def load(path: str | Path, device: str = "auto") -> Learner:
    """Load the learner saved in a metarun checkpoint (``best.pt`` or ``last.pt``).

    Nothing in the file is executed: it is read with ``torch.load(weights_only=True)`` and its
    config may only name targets under :data:`ALLOWED_TARGETS`.

    Args:
        path: the checkpoint file.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    """
    return restore(load_checkpoint(path, map_location="cpu"), device)


def restore(blob: dict[str, Any], device: str = "auto") -> Learner:
    """The learner of a checkpoint already read by
    :func:`~metarun.engine.checkpoint.load_checkpoint` (see :func:`load`)."""
    from hydra.utils import instantiate

    from metarun.run import build_algorithm

    target = resolve_device(device)
    config = OmegaConf.create(blob["config"])
    check_targets(config)
    dataset = instantiate(config.data)
    algorithm = build_algorithm(config, dataset, blob.get("train_classes"))
    algorithm.load_state_dict(blob["algorithm"])
    algorithm.to(target).eval()
    return Learner(algorithm, dataset, target, config)
