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
from metarun.types import Dataset


class Learner:
    """A meta-trained learner: preprocessing, adaptation and prediction on one device.

    Attributes:
        algorithm: the meta-trained model, in meta-test mode.
        dataset: the dataset it was trained on (its preprocessing and input shape).
        device: where it runs.
        config: the run's resolved config.
    """

    def __init__(self, algorithm: Algorithm, dataset: Dataset, device: torch.device,
                 config: DictConfig) -> None:
        self.algorithm = algorithm
        self.dataset = dataset
        self.device = device
        self.config = config

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
        return self.dataset.preprocess(images).to(self.device)

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
        targets = self.algorithm.task_type.targets(support_y, len(support_x), self.device)
        return self.algorithm.adapt(support_x.to(self.device), targets)


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
    from metarun.build import saved

    restored = saved.restore(load_checkpoint(path, map_location="cpu"), source=str(path))
    target = resolve_device(device)
    restored.algorithm.to(target).eval()
    return Learner(restored.algorithm, restored.dataset, target, restored.config)
