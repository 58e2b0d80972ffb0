"""The README keeps what CI and users rely on: the install and test commands, its sections,
every config group and every command."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_the_install_and_test_commands_are_the_ones_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install ".[dev]"' in README and '".[dev]"' in ci
    assert "python -m pytest" in README and "python -m pytest" in ci


def test_the_sections_users_look_for_are_there() -> None:
    headings = set(re.findall(r"^#+ (.+)$", README, re.MULTILINE))
    for section in ("Install", "Data", "Run", "Config groups and keys", "What a run writes",
                    "The evaluation protocol", "Comparing runs", "Ensembles",
                    "Failure and recovery", "Python API", "Test", "Benchmarks", "Layout"):
        assert section in headings, section


def test_every_config_group_and_option_is_documented() -> None:
    conf = REPO / "conf"
    for group in sorted(p for p in conf.iterdir() if p.is_dir() and p.name != "hydra"):
        assert f"| `{group.name}` |" in README, group.name
        for option in sorted(group.glob("*.yaml")):
            assert f"`{option.stem}`" in README, f"{group.name}={option.stem}"


def test_every_command_is_documented() -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    section = pyproject.split("[project.scripts]")[1].split("\n[")[0]
    scripts = re.findall(r"^([\w-]+) =", section, re.MULTILINE)
    assert "metarun" in scripts and "metarun-report" in scripts
    for name in scripts:
        assert f"`{name}" in README, name


def test_pictures_the_readme_shows_exist() -> None:
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (REPO / target).is_file(), target
