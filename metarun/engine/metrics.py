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

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        """Start a new file, or, with ``resume_step``, keep the existing file's training and
        validation points up to that step (a resumed run re-does the steps after it) and
        append."""
        self.path = Path(path)
        kept: list[str] = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash
                    continue
                if record.get("split") != "test" and record.get("step", 0) <= resume_step:
                    kept.append(line + "\n")
        self._file: IO[str] = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        self._file.writelines(kept)
        self._file.flush()

    def write(self, step: int, split: str, loss: float, seconds: float,
              **values: float | int | str) -> None:
        record = {"step": step, "split": split, "loss": loss, **values,
                  "seconds": round(seconds, 3)}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
