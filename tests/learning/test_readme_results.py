"""The results table of docs/evaluation.md, re-run: the default schedules as a user types
them.

``python -m pytest -m reproduce --dist load`` re-runs both rows, one per worker (ProtoNet's
took 18 minutes in a one-thread CI worker on 2026-12-02; MAML's recipe is shorter now). Not in
CI: with them `.ci/run` took 75 minutes, over its 60-minute budget; the slow learning tests
meta-train both methods on Omniglot there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.cli import metarun


@pytest.mark.reproduce
@pytest.mark.parametrize(("algo", "floor"), [
    ("protonet", 0.975),  # docs/results.md: 98.48% +/- 0.26% (the 60-way recipe)
    ("maml", 0.95),       # docs/results.md: 96.48% +/- 0.40% (conf/algo_data/maml_omniglot)
])
def test_default_schedule(algo: str, floor: float, env: dict[str, str], tmp_path: Path) -> None:
    proc = metarun([f"algo={algo}", "data=omniglot", "device=cpu",
                    f"hydra.run.dir={tmp_path / 'run'}"], env, tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    print(proc.stdout.strip().splitlines()[-1])
    assert summary["test"]["episodes"] == 600
    assert summary["test"]["acc"] > floor, summary["test"]
