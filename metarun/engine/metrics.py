"""``metrics.jsonl``: one JSON object per logged point, flushed as it is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO


class MetricsLog:
    """Writes ``{"step", "split", "loss", <metric>, "seconds", ...}`` lines to a new file.

    ``<metric>`` is the task type's metric: ``"acc"`` for classification, ``"mse"`` for
    regression.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[str] = open(self.path, "w", encoding="utf-8")  # noqa: SIM115

    def write(self, step: int, split: str, loss: float, seconds: float,
              **values: float | int | str) -> None:
        record = {"step": step, "split": split, "loss": loss, **values,
                  "seconds": round(seconds, 3)}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
