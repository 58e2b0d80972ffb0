"""``train.precision``: the number format of meta-training steps.

- ``32``: float32 throughout (the default).
- ``bf16``: the step's forward pass (inner loops included) under ``torch.autocast`` in
  bfloat16; weights, gradients and the optimizer stay float32. bfloat16 has float32's range,
  so no loss scaling is needed, second order included.
- ``16-mixed``: autocast in float16 with a gradient scaler (the loss is scaled before the
  backward pass, the gradients unscaled before clipping; a step whose gradients overflow is
  skipped and the scale lowered, as ``torch.amp.GradScaler`` does). Second-order
  meta-gradients are refused: the inner gradients are taken inside the graph without the
  scaler, and their second derivatives overflow float16 (NaN within a few steps).

Validation and meta-test run in float32 whatever the mode, so a run's reported numbers never
depend on it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

PRECISIONS = ("32", "bf16", "16-mixed")
_DTYPES = {"bf16": torch.bfloat16, "16-mixed": torch.float16}


class Precision:
    """The autocast context and, for ``16-mixed``, the gradient scaler of a run's steps."""

    def __init__(self, mode: str | int = "32", device: torch.device | None = None,
                 second_order: bool = False) -> None:
        mode = str(mode)
        if mode not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}; got "
                             f"{mode!r}")
        if mode == "16-mixed" and second_order:
            raise ValueError("train.precision=16-mixed cannot train a second-order method: "
                             "float16 second derivatives overflow to NaN; use "
                             "train.precision=bf16 or algo.first_order=true")
        self.mode = mode
        self.device_type = (device or torch.device("cpu")).type
        self.scaler = (torch.amp.GradScaler(self.device_type) if mode == "16-mixed"
                       else None)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context of a step's forward pass."""
        if self.mode == "32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=_DTYPES[self.mode])

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """The true gradients, before they are clipped or checked."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    @property
    def skips_overflow(self) -> bool:
        """Whether a non-finite gradient is the scaler's to handle (a skipped step), rather
        than an error."""
        return self.scaler is not None

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
