"""The rows of the results table (``bench/results.yaml``) and the metarun command of each: a
row is a recipe, run once (at the recipe's own seed) or once per seed of its ``seeds``."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metarun.configs import parse_duration

ROW_KEYS = {"name", "method", "args", "budget", "paper", "note", "seeds"}


@dataclass
class Row:
    """One recipe: a metarun command line (without ``device`` and the run directory). A row
    with ``seeds`` is shown as one row of the table but runs as ``parts``, one per seed."""

    name: str
    method: str
    args: list[str]
    budget: str | None = None
    paper: dict[str, Any] | None = None
    note: str = ""
    seeds: list[int] = field(default_factory=list)
    parts: list[Row] = field(default_factory=list)  # the runs of a row with seeds
    seed: int | None = None  # a part's seed
    summary: dict[str, Any] = field(default_factory=dict)
    data: str = ""
    ran: dict[str, str] = field(default_factory=dict)  # date, commit, hardware
    config: dict[str, Any] | None = None  # the recipe its command composes now

    @property
    def runs(self) -> list[Row]:
        """What runs: the row itself, or one part per seed."""
        return self.parts or [self]


def _seeds(raw: Any, where: str) -> list[int]:
    if raw is None:
        return []
    if (not isinstance(raw, list) or len(raw) < 2 or len(set(raw)) != len(raw)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw)):
        raise SystemExit(f"{where}: seeds must be a list of two or more different integers "
                         f"(one seed: put seed=N in args); got {raw!r}")
    return list(raw)


def load_rows(path: Path) -> list[Row]:
    """The rows of a results file; a row with an unknown key, no name or no args is refused."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    rows = []
    for i, raw in enumerate(spec.get("rows") or []):
        unknown = set(raw) - ROW_KEYS
        if unknown or not raw.get("name") or not raw.get("args"):
            raise SystemExit(f"{path}: row {i + 1} needs name, method and args (and may have "
                             f"budget, paper, note, seeds); got {sorted(raw)}")
        if raw.get("budget") is not None:
            parse_duration(raw["budget"], f"row {raw['name']}: budget")
        row = Row(name=str(raw["name"]), method=str(raw.get("method", raw["name"])),
                  args=[str(a) for a in raw["args"]], budget=raw.get("budget"),
                  paper=raw.get("paper"), note=str(raw.get("note") or ""),
                  seeds=_seeds(raw.get("seeds"), f"{path}: row {raw['name']}"))
        row.parts = [Row(name=f"{row.name}-seed{s}", method=row.method,
                         args=[*row.args, f"seed={s}"], budget=row.budget, paper=row.paper,
                         note=row.note, seed=s) for s in row.seeds]
        rows.append(row)
    names = run_names(rows)
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: row names must be unique (they name the run directories; "
                         f"a row with seeds runs in <name>-seed<N>)")
    return rows


def run_names(rows: list[Row]) -> list[str]:
    """Every name ``--only`` takes: each row's, and each of its parts'."""
    return [r.name for row in rows for r in [row, *row.parts]]


def selected(row: Row, run: Row, only: list[str] | None) -> bool:
    """Whether ``--only`` selects ``run`` (``row`` itself or one of its parts): by its own
    name or its row's; everything when there is no ``--only``."""
    return only is None or row.name in only or run.name in only


def budget_of(row: Row, scale: float) -> float | None:
    """The row's ``train.max_time`` in seconds, times ``scale`` (``None``: no budget)."""
    seconds = parse_duration(row.budget)
    return None if seconds is None else seconds * scale


def command(row: Row, device: str, scale: float) -> list[str]:
    """The metarun command line that reproduces the row (without the run directory): for a row
    with seeds, the multirun over them."""
    args = ["metarun", *(["-m"] if row.seeds else []), *row.args]
    if row.seeds:
        args.append("seed=" + ",".join(map(str, row.seeds)))
    args.append(f"device={device}")
    seconds = budget_of(row, scale)
    if seconds is not None:
        args.append(f"train.max_time={duration(seconds)}")
    if row.paper:
        inner = ",".join(f"{k}:{_hydra_value(v)}" for k, v in row.paper.items())
        args.append(f"paper={{{inner}}}")
    return args


def command_line(row: Row, device: str, scale: float) -> str:
    """:func:`command` as one shell line (quoted where a shell would change an argument, as it
    would expand ``paper={a,b}`` into two): what the table shows and a record is keyed by."""
    return shlex.join(command(row, device, scale))


def _hydra_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "null" if value is None else str(value)


def duration(seconds: float) -> str:
    """Seconds as a ``train.max_time`` value: ``3m`` or ``45s``."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"
