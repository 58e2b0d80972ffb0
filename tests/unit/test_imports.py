"""``import metarun`` and ``metarun --help`` stay fast: torch is imported only where used."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _imports_torch(statement: str) -> bool:
    code = f"{statement}; import sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip() == "True"


def test_import_metarun_does_not_import_torch() -> None:
    assert not _imports_torch("import metarun")


def test_cli_modules_do_not_import_torch() -> None:
    for module in ("train", "evaluate", "ensemble", "report"):
        assert not _imports_torch(f"import metarun.cli.{module}"), module


def test_every_imported_package_is_declared() -> None:
    """``dependencies`` in pyproject.toml names exactly the third-party packages that
    ``metarun/`` imports at its top level (lazy imports of optional extras aside)."""
    import ast
    import re
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    declared = {re.split(r"[<>=\[ ]", d)[0].lower() for d in
                tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]}
    distribution = {"PIL": "pillow", "yaml": "pyyaml", "hydra": "hydra-core"}
    from metarun.extras import EXTRAS

    # optional: the packages of metarun.extras (and optuna, which the sweep extra brings)
    extras = {module.split(".")[0] for module, _ in EXTRAS.values()} | {"optuna"}
    imported: set[str] = set()
    for path in (root / "metarun").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and \
                node.module else []
            imported |= {n.split(".")[0] for n in names}
    third_party = {m for m in imported - set(sys.stdlib_module_names) - extras
                   if m not in ("metarun", "__future__")}
    assert {distribution.get(m, m).lower() for m in third_party} == declared
