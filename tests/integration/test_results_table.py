"""``bench/results.py`` runs each row's command at its budget, one at a time, and writes the
table from the runs' own summaries; a failed row is reported and the rest still run; a second
build keeps the rows that completed, and the rows it does not run come from their records, each
with the date and commit it ran at."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from metarun.tasktypes import REGRESSION

BENCH = Path(__file__).resolve().parents[2] / "bench"
ROWS = """
rows:
  - name: maml-sine
    method: MAML
    args: [data=sinusoid, algo=maml, train.iterations=100000, train.eval_every=100,
           eval.val_episodes=4, eval.test_episodes=20, train.plot=false]
    budget: 4s
    paper: {metric: mse, value: 0.5, ci95: null, ways: 1, shots: 10, source: "A paper, 2017"}
    note: a test row
  - name: broken
    method: nothing
    args: [algo=no_such_algorithm]
  - name: later
    method: ANIL
    args: [data=sinusoid, algo=anil, train.iterations=5, train.eval_every=5,
           eval.val_episodes=2, eval.test_episodes=4, train.plot=false]
"""


def _results() -> Any:
    if str(BENCH) not in sys.path:  # as when it runs as a script: its helpers beside it
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_results", BENCH / "results.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_results"] = module
    spec.loader.exec_module(module)
    return module


def _build(tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
           rows_text: str) -> tuple[Any, list[str], Path, Path, Path]:
    """The script, its arguments for a build of ``rows_text`` in ``tmp_path``, and where that
    build's run directories, table and records go."""
    results = _results()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rows, root, out = tmp_path / "rows.yaml", tmp_path / "runs", tmp_path / "results.md"
    rows.write_text(rows_text)
    records = tmp_path / "records.json"
    argv = ["--rows", str(rows), "--root", str(root), "--out", str(out), "--records",
            str(records)]
    return results, argv, root, out, records


def test_the_table_is_the_runs_and_a_second_build_keeps_them(
        tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    results, argv, root, out, records = _build(tmp_path, env, monkeypatch, ROWS)
    rows = tmp_path / "rows.yaml"
    argv += ["--budget-scale", "0.25"]
    assert results.main(argv) == 1  # one row failed; the others ran
    summary = json.loads((root / "maml-sine" / "summary.json").read_text())
    assert summary["stopped"] == "max_time" and summary["max_time"] == 1.0
    text = out.read_text()
    line = next(x for x in text.splitlines() if x.startswith("| MAML |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    test = summary["test"]
    assert cells[1] == "Sinusoid 10-shot"
    assert cells[2] == ("`metarun data=sinusoid algo=maml train.iterations=100000 "
                        "train.eval_every=100 eval.val_episodes=4 eval.test_episodes=20 "
                        "train.plot=false device=cpu train.max_time=1s 'paper={metric:\"mse\","
                        "value:0.5,ci95:null,ways:1,shots:10,source:\"A paper, 2017\"}'`")
    assert cells[3] == "1s" and cells[5] == f"{summary['steps']:,} (budget)"
    assert cells[6] == REGRESSION.format(test["mse"], test["ci95"])
    assert cells[7:9] == ["0.5000", "A paper, 2017"]
    assert cells[9] == ("+" if test["mse"] >= 0.5 else "") + REGRESSION.format(test["mse"] - 0.5)
    assert "| nothing |" in text and "FAILED (`broken.log`)" in text
    assert "| ANIL | Sinusoid 10-shot |" in text and "a test row" in text
    assert f"on {os.cpu_count()} cores" in text or f", {os.cpu_count()} cores" in text

    before = (root / "maml-sine" / "summary.json").stat().st_mtime_ns
    assert results.main([*argv, "--only", "maml-sine", "later"]) == 0
    assert (root / "maml-sine" / "summary.json").stat().st_mtime_ns == before  # kept
    assert "FAILED (`broken.log`)" in out.read_text()  # still listed, not re-run

    # Without the run directories, the rows not run again come from their records.
    kept = json.loads(records.read_text())
    assert kept["maml-sine"]["command"] == cells[2].strip("`")
    assert kept["maml-sine"]["summary"]["test"]["mse"] == test["mse"]
    assert kept["broken"]["summary"]["status"] == "failed"
    kept["maml-sine"]["commit"], kept["maml-sine"]["date"] = "abc1234", "2020-01-02"
    records.write_text(json.dumps(kept))
    shutil.rmtree(root)
    assert results.main([*argv, "--only", "later"]) == 0
    text = out.read_text()
    line = next(x for x in text.splitlines() if x.startswith("| MAML |"))
    assert line.endswith("| 2020-01-02, `abc1234` |")
    assert cells[6] in line and "FAILED (`broken.log`)" in text
    assert json.loads(records.read_text())["later"]["date"] != "2020-01-02"

    # The same command over another recipe (a config file changed since): a completed run of
    # the old recipe is moved aside and the row runs again; its record, made by the old
    # recipe, is not shown as the row's.
    config = root / "later" / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("eval_every: 5", "eval_every: 1"))
    assert results.main([*argv, "--table-only"]) == 0  # the old run is not the row's result
    kept = json.loads(records.read_text())
    later = results.load_rows(rows)[2]
    assert kept["later"]["recipe_sha256"] == results.fingerprint(
        results.recipe(results.command(later, "cpu", 0.25)[1:]))
    before = (root / "later" / "summary.json").stat().st_mtime_ns
    assert results.main([*argv, "--only", "later"]) == 0
    (stale,) = root.glob("later.stale-*")
    assert "eval_every: 1" in (stale / ".hydra" / "config.yaml").read_text()
    assert (root / "later" / "summary.json").stat().st_mtime_ns != before  # ran again
    kept = json.loads(records.read_text())
    kept["later"]["recipe_sha256"] = "0" * 64  # as if recorded under another recipe
    records.write_text(json.dumps(kept))
    shutil.rmtree(root)
    assert results.main([*argv, "--table-only"]) == 0
    assert "| ANIL |" not in out.read_text()

    # A record made by another command (here another budget) is not shown as the row's.
    rows.write_text(ROWS.replace("budget: 4s", "budget: 8s"))
    assert results.main([*argv, "--table-only"]) == 0
    text = out.read_text()
    assert "| MAML |" not in text and "Not run yet with their present commands: `maml-sine`" in text


SEEDS = """
rows:
  - name: anil
    method: ANIL
    args: [data=sinusoid, algo=anil, train.iterations=5, train.eval_every=5,
           eval.val_episodes=2, eval.test_episodes=4, train.plot=false]
    seeds: [0, 1]
    paper: {metric: mse, value: 0.5, ci95: null, ways: 1, shots: 10, source: "A paper, 2017"}
"""


def test_a_row_with_seeds_runs_each_and_its_multirun_command_reproduces_them(
        tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A row with ``seeds`` runs (and records) once per seed and shows the mean and sample
    standard deviation of their test means; the multirun command the table shows, pasted into
    a shell, gives the same numbers."""
    results, argv, root, out, records = _build(tmp_path, env, monkeypatch, SEEDS)
    assert results.main(argv) == 0
    scores = [json.loads((root / f"anil-seed{s}" / "summary.json").read_text())["test"]["mse"]
              for s in (0, 1)]
    assert scores[0] != scores[1]  # the seeds really differ
    kept = json.loads(records.read_text())
    assert sorted(kept) == ["anil-seed0", "anil-seed1"]
    assert " seed=1 device=cpu " in kept["anil-seed1"]["command"]
    line = next(x for x in out.read_text().splitlines() if x.startswith("| ANIL |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    shown = cells[2].strip("`")
    assert shown.startswith("metarun -m data=sinusoid ") and " seed=0,1 device=cpu " in shown
    mean, sd = statistics.fmean(scores), statistics.stdev(scores)
    each = ", ".join(REGRESSION.format(v) for v in scores)
    assert cells[6] == f"{REGRESSION.format(mean, sd)} over 2 seeds ({each})"
    assert cells[4].endswith(" s (mean)") and cells[5] == "5"
    assert cells[9] == ("+" if mean >= 0.5 else "") + REGRESSION.format(mean - 0.5)

    sweep = tmp_path / "sweep"
    subprocess.run(["bash", "-c", f"{shown} hydra.sweep.dir={sweep}"], env=env, check=True,
                   capture_output=True)
    assert [json.loads((sweep / str(i) / "summary.json").read_text())["test"]["mse"]
            for i in (0, 1)] == scores

    # One seed's result missing: the row shows the others and names the missing run, which
    # --only runs alone.
    del kept["anil-seed1"]
    records.write_text(json.dumps(kept))
    shutil.rmtree(root)
    assert results.main([*argv, "--table-only"]) == 0
    text = out.read_text()
    assert f"over 1 seed ({REGRESSION.format(scores[0])}); seed 1: not run yet" in text
    assert "Not run yet with their present commands: `anil-seed1`" in text
    capsys.readouterr()
    assert results.main([*argv, "--only", "anil-seed1", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        kept["anil-seed0"]["command"].replace(" seed=0 ", " seed=1 ")]


def test_a_bad_rows_file_or_row_name_is_refused(tmp_path: Path) -> None:
    results = _results()
    rows = tmp_path / "rows.yaml"
    rows.write_text("rows:\n  - name: a\n    args: [algo=maml]\n    budgett: 5m\n")
    with pytest.raises(SystemExit, match="row 1 needs name, method and args"):
        results.main(["--rows", str(rows), "--dry-run"])
    rows.write_text("rows:\n  - name: a\n    args: [algo=maml]\n    budget: 5 minutes\n")
    with pytest.raises(ValueError, match="row a: budget must be a positive duration"):
        results.main(["--rows", str(rows), "--dry-run"])
    for seeds in ("[1]", "[0, 0]", "[0, x]", "3"):
        rows.write_text(f"rows:\n  - name: a\n    args: [algo=maml]\n    seeds: {seeds}\n")
        with pytest.raises(SystemExit, match="seeds must be a list of two or more"):
            results.main(["--rows", str(rows), "--dry-run"])
    rows.write_text("rows:\n  - name: a\n    args: [algo=maml]\n    seeds: [0, 1]\n"
                    "  - name: a-seed1\n    args: [algo=maml]\n")
    with pytest.raises(SystemExit, match="row names must be unique"):
        results.main(["--rows", str(rows), "--dry-run"])
    rows.write_text("rows:\n  - name: a\n    args: [algo=maml]\n")
    with pytest.raises(SystemExit):
        results.main(["--rows", str(rows), "--only", "b", "--dry-run"])


def test_every_shipped_row_names_an_experiment_or_states_its_paper() -> None:
    """The shipped table's rows compose (their experiments exist) and each has a number to
    compare with, or says why not."""
    from tests.helpers import compose_config

    results = _results()
    for row in results.load_rows(BENCH / "results.yaml"):
        cfg = compose_config(*row.args)
        # A row without one (the baselines', ANIL's: their papers report no Omniglot 5-way
        # 1-shot number) says so in its note, which the table shows.
        assert row.paper or cfg.paper or row.note, row.name


def test_a_row_is_marked_changed_only_by_changes_to_code_or_configuration(
        tmp_path: Path) -> None:
    results = _results()
    repo = tmp_path / "repo"
    for name in ("bench/results.py", "bench/results.json", "conf/a.yaml", "docs/results.md",
                 "README.md", "metarun/x.py"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("0\n")

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                       check=True, capture_output=True)

    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "rows")
    head = results.commit(repo)
    assert len(head) >= 7 and "+" not in head
    for name in ("docs/results.md", "README.md", "bench/results.json"):  # what a run writes
        (repo / name).write_text("1\n")
    (repo / "untracked.txt").write_text("1\n")
    assert results.commit(repo) == head
    for name in ("conf/a.yaml", "metarun/x.py"):
        (repo / name).write_text("1\n")
        assert results.commit(repo) == head + "+changes", name
        (repo / name).write_text("0\n")
    assert results.commit(repo) == head


def test_a_row_records_the_commit_its_run_started_from(
        tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit made while a row runs is not the run's code: the record keeps the commit of
    the checkout the run started from."""
    results = _results()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    now = ["abc1234"]
    monkeypatch.setattr(results, "commit", lambda repo: now[0])

    run = results.run_row

    def run_row(*args: Any) -> tuple[dict[str, Any], bool]:
        now[0] = "abc1234+changes"  # a file edited while the row runs
        return run(*args)  # type: ignore[no-any-return]

    monkeypatch.setattr(results, "run_row", run_row)
    rows, records = tmp_path / "rows.yaml", tmp_path / "records.json"
    rows.write_text(ROWS)
    assert results.main(["--rows", str(rows), "--root", str(tmp_path / "runs"), "--out",
                         str(tmp_path / "results.md"), "--records", str(records),
                         "--only", "later"]) == 0
    assert json.loads(records.read_text())["later"]["commit"] == "abc1234"


def test_a_key_added_later_with_a_null_default_keeps_the_records() -> None:
    """A record's recipe fingerprint leaves null values out, as resuming takes a missing key
    for a null one (``metarun.jobs.resume.differences``): adding an option whose default, null,
    is the behaviour from before (``backbone.pooled_blocks``) must not hide every row."""
    fingerprint = _results().fingerprint
    before = {"backbone": {"hidden": 64}, "seed": 0}
    assert fingerprint({"backbone": {"hidden": 64, "pooled_blocks": None}, "seed": 0}) == (
        fingerprint(before))
    assert fingerprint({"backbone": {"hidden": 64, "pooled_blocks": 2}, "seed": 0}) != (
        fingerprint(before))
    assert fingerprint({"backbone": {"hidden": 32}, "seed": 0}) != fingerprint(before)
