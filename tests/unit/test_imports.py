"""``import metarun`` and ``metarun --help`` stay fast: torch is imported only where used."""

from __future__ import annotations

import subprocess
import sys


def _imports_torch(statement: str) -> bool:
    code = f"{statement}; import sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip() == "True"


def test_import_metarun_does_not_import_torch() -> None:
    assert not _imports_torch("import metarun")


def test_cli_module_does_not_import_torch() -> None:
    assert not _imports_torch("import metarun.cli")
