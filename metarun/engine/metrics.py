"""``metrics.jsonl``: one JSON object per logged point, flushed as it is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any, Protocol


class MetricsSink(Protocol):
    """Somewhere else the same points go (``logger=`` in the config), e.g. TensorBoard;
    ``close`` is told how the run ended (a summary status: ``completed``, ``failed``, ...)."""

    def write(self, step: int, split: str, values: dict[str, float]) -> None: ...

    def close(self, status: str = "completed") -> None: ...


class MetricsLog:
    """Writes ``{"step", "split", "loss", <metric>, "seconds", ...}`` lines to a new file.

    ``<metric>`` is the task type's metric: ``"acc"`` for classification, ``"mse"`` for
    regression.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None,
                 sinks: list[MetricsSink] | None = None) -> None:
        """Start a new file, or, with ``resume_step``, keep the existing file's training and
        validation points up to that step (a resumed run re-does the steps after it) and
        append. Every point also goes to each of ``sinks``."""
        self.path = Path(path)
        self.sinks = list(sinks or [])
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
        numbers = {k: float(v) for k, v in record.items()
                   if k not in ("step", "split") and isinstance(v, (int, float))}
        for sink in self.sinks:
            sink.write(step, split, numbers)

    def close(self, status: str = "completed") -> None:
        """Close the file (if still open) and end every sink's run with ``status``."""
        if not self._file.closed:
            self._file.close()
        for sink in self.sinks:
            sink.close(status)
        self.sinks = []


class TensorBoardSink:
    """The same scalars as ``metrics.jsonl`` in TensorBoard, tagged ``<split>/<name>``
    (``train/loss``, ``val/acc``, ``test/acc`` ...), in ``<run dir>/<log_dir>``.

    Args:
        log_dir: the event-file folder, relative to the run directory unless absolute.
        run_dir: the run directory.
        purge_step: a resumed run's first re-done step: TensorBoard drops the points at and
            after it that the interrupted process wrote.
    """

    def __init__(self, log_dir: str, run_dir: str | Path, purge_step: int | None = None,
                 run_config: dict[str, Any] | None = None) -> None:
        from metarun.extras import require

        require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer: Any = SummaryWriter(str(Path(run_dir) / Path(log_dir).expanduser()),
                                         purge_step=purge_step)

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        for name, value in values.items():
            if name != "seconds":
                self.writer.add_scalar(f"{split}/{name}", value, step)
        self.writer.flush()

    def close(self, status: str = "completed") -> None:
        self.writer.close()
