"""Readable units, kept: no function in ``metarun/`` over 60 lines, no module over 350, and no
``if`` on a task type's name or metric outside the task-type module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "metarun"
MAX_FUNCTION, MAX_MODULE = 60, 350


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_function_is_longer_than_a_screen() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > MAX_FUNCTION:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} "
                                f"({length} lines)")
    assert not long, long


def test_no_module_is_longer_than_350_lines() -> None:
    long = [f"{p.relative_to(PACKAGE)} ({n})" for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE]
    assert not long, long


#: A comparison with one of the names the task types own.
_OWNED = re.compile(r"""(==|!=|\bin)\s*\(?\s*["'](classification|regression|acc|mse)["']""")


def test_only_the_task_types_compare_their_names() -> None:
    found = [f"{p.relative_to(PACKAGE)}:{i}: {line.strip()}"
             for p in _modules() if p.name != "tasktypes.py"
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if _OWNED.search(line) or re.search(r"""["'](acc|mse)["']\s*(==|!=)""", line)]
    assert not found, found
