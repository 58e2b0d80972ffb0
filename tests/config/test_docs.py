"""The README is the front door and docs/ the house: what CI and users rely on stays in them,
every config group, option, console script and run-directory file is documented, and every
link and picture they show exists (``mkdocs build --strict`` in CI checks the site too)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
DOCS = {p.name: p.read_text(encoding="utf-8") for p in sorted((REPO / "docs").glob("*.md"))}
ALL_DOCS = "\n".join(DOCS.values())


def test_the_install_and_test_commands_are_the_ones_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install ".[dev]"' in README and '".[dev]"' in ci
    assert "python -m pytest" in README and "python -m pytest" in ci
    assert "lint-imports" in ci and "mkdocs build --strict" in ci


def test_the_readme_is_a_front_door() -> None:
    assert len(README.splitlines()) <= 220
    headings = set(re.findall(r"^## (.+)$", README, re.MULTILINE))
    for section in ("Install", "First runs", "Config groups at a glance", "Commands", "Test",
                    "Documentation"):
        assert section in headings, section


def test_every_page_is_in_the_site_and_every_link_resolves() -> None:
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    for name in DOCS:
        assert f": {name}" in nav, name
    for source, text, base in [("README.md", README, REPO),
                               *((n, t, REPO / "docs") for n, t in DOCS.items())]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not target.startswith(("http://", "https://")):
                assert (base / target).exists(), f"{source}: {target}"


def test_the_sections_users_look_for_are_there() -> None:
    headings = set(re.findall(r"^#+ (.+)$", ALL_DOCS, re.MULTILINE))
    for section in ("Datasets and protocols", "Configuration", "Config groups and keys",
                    "What a run writes", "The evaluation protocol", "Sweeps and searches",
                    "Ensembles", "Failure and recovery", "Exit statuses", "Python API",
                    "Testing and benchmarks", "Benchmarks", "Architecture", "Layers", "Layout"):
        assert section in headings, section


def test_every_config_group_and_option_is_documented() -> None:
    conf = REPO / "conf"
    for group in sorted(p for p in conf.iterdir() if p.is_dir() and p.name != "hydra"):
        assert f"| `{group.name}` |" in DOCS["configuration.md"], group.name
        for option in sorted(group.glob("*.yaml")):
            assert f"`{option.stem}`" in DOCS["configuration.md"], f"{group.name}={option.stem}"


def test_every_command_is_documented() -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    section = pyproject.split("[project.scripts]")[1].split("\n[")[0]
    scripts = re.findall(r"^([\w-]+) =", section, re.MULTILINE)
    assert "metarun" in scripts and "metarun-report" in scripts
    for name in scripts:
        assert f"`{name}" in README and f"`{name}" in ALL_DOCS, name


def test_every_file_a_run_writes_is_documented(tmp_path: Path) -> None:
    """A real (tiny, sinusoid) run, stopped and resumed so that every checkpoint exists."""
    from metarun.jobs.train import run
    from tests.helpers import compose_config

    run(compose_config("data=sinusoid", "device=cpu", "train.iterations=4",
                       "train.eval_every=2", "train.checkpoint_every=1", "eval.val_episodes=2",
                       "eval.test_episodes=2", "train.plot=true"), tmp_path)
    written = {p.name for p in tmp_path.iterdir()} | {
        f"checkpoints/{p.name}" for p in (tmp_path / "checkpoints").iterdir()}
    assert {"summary.json", "metrics.jsonl", "checkpoints/best.pt"} <= written
    table = DOCS["configuration.md"].split("## What a run writes")[1]
    for name in sorted(written - {"checkpoints"}):
        assert f"`{name}" in table, name


@pytest.mark.parametrize("source", ["README.md", *DOCS])
def test_pictures_exist(source: str) -> None:
    text, base = (README, REPO) if source == "README.md" else (DOCS[source], REPO / "docs")
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (base / target).is_file(), target
