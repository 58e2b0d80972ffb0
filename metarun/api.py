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
from omegaconf import DictConfig
from torch import Tensor

from metarun.algorithms.base import Algorithm, Predictor
from metarun.device import resolve_device
from metarun.engine.checkpoint import load_checkpoint


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
        if len(images) == 0:
            raise ValueError("preprocess needs at least one input; got none")
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
        if len(support_x) == 0:
            raise ValueError("the support set is empty: adapt needs at least one example")
        if self.algorithm.task_type.name == "regression":
            targets = torch.as_tensor(support_y, dtype=torch.float32, device=self.device)
            targets = targets[:, None] if targets.dim() == 1 else targets
            if len(targets) != len(support_x):
                raise ValueError("support_y must hold one target per support input")
            return self.algorithm.adapt(support_x.to(self.device), targets)
        return self.algorithm.adapt(support_x.to(self.device),
                                    _labels(support_y, len(support_x), self.device))


def _labels(support_y: Tensor | Sequence[int] | Sequence[float], count: int,
            device: torch.device) -> Tensor:
    """Classification labels as a long tensor, refusing anything but the integers 0..N-1 (each
    present), one per support image; ``0.5`` is an error, not label 0."""
    values = torch.as_tensor(support_y)
    if values.dim() != 1 or len(values) != count:
        raise ValueError(f"support_y must hold one label per support image ({count}); got "
                         f"shape {tuple(values.shape)}")
    if values.is_floating_point() or values.is_complex():
        if not bool((values == values.round()).all()):
            raise ValueError("support_y must hold whole-number labels 0..N-1; got "
                             f"{values.tolist()}")
    elif values.dtype == torch.bool:
        raise ValueError("support_y must hold integer labels 0..N-1, not booleans")
    labels = values.long()
    ways = int(labels.max()) + 1
    if labels.min() < 0 or set(labels.tolist()) != set(range(ways)):
        raise ValueError("support_y must hold one label per support image, covering 0..N-1 "
                         "with every label present")
    return labels.to(device)


def load(path: str | Path, device: str = "auto") -> Learner:
    """Load the learner saved in a metarun checkpoint (``best.pt`` or ``last.pt``).

    Nothing in the file is executed: it is read with ``torch.load(weights_only=True)``, and its
    config is built only if every ``_target_`` is a component that metarun's own config files
    name at that place (:func:`metarun.configs.check_stored_config`).

    Args:
        path: the checkpoint file.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a loadable metarun checkpoint, or its config names
            something metarun does not ship (one line each).
    """
    return restore(load_checkpoint(path, map_location="cpu"), device, source=str(path))


def restore(blob: dict[str, Any], device: str = "auto", source: str = "checkpoint") -> Learner:
    """The learner of a checkpoint already read by
    :func:`~metarun.engine.checkpoint.load_checkpoint` from ``source`` (see :func:`load`)."""
    from hydra.utils import instantiate

    from metarun.configs import trusted_config
    from metarun.run import build_algorithm

    config = trusted_config(blob, source)  # before anything is imported or built
    target = resolve_device(device)
    dataset = instantiate(config.data)
    algorithm = build_algorithm(config, dataset, blob.get("train_classes"))
    state = blob.get("algorithm")
    if not isinstance(state, dict):
        raise ValueError(f"{source} holds no model weights")
    try:
        algorithm.load_state_dict(state)
    except RuntimeError as e:  # torch lists every mismatched tensor, over many lines
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"{source}: the saved weights do not fit the model its config "
                         f"describes ({first})") from None
    algorithm.to(target).eval()
    return Learner(algorithm, dataset, target, config)
