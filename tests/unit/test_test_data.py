"""How the tests find Omniglot on anyone's clone (tests/data.py): here, then fetched through
metarun's own downloader and checksums, else one line saying what to provide."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from metarun.data import omniglot as og
from tests.data import find_omniglot, has_omniglot


def _never(root: Path) -> None:
    raise AssertionError("fetched although the data is present")


def test_data_that_is_present_is_used_without_the_network(data_root: Path,
                                                          tmp_path: Path) -> None:
    assert find_omniglot([tmp_path / "empty", data_root], tmp_path / "cache", _never) == \
        (data_root, "")


def test_missing_data_is_fetched_once_with_its_checksums(data_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    served = tmp_path / "served"
    served.mkdir()
    for name in og.SOURCES:
        shutil.copy(data_root / "omniglot" / f"{name}.zip", served)
    monkeypatch.setattr(og, "URL_PREFIX", served.as_uri())  # a "server" on this disk
    monkeypatch.setattr(og, "MD5", {n: hashlib.md5((served / f"{n}.zip").read_bytes())
                                    .hexdigest() for n in og.SOURCES})
    root, problem = find_omniglot([tmp_path / "empty"], tmp_path / "cache")
    assert (root, problem) == (tmp_path / "cache", "") and has_omniglot(root)
    assert find_omniglot([tmp_path / "empty"], tmp_path / "cache", _never)[0] == root


def test_data_that_cannot_be_fetched_is_one_line_naming_what_to_provide(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(og, "URL_PREFIX", (tmp_path / "nowhere").as_uri())
    root, problem = find_omniglot([tmp_path / "empty"], tmp_path / "cache")
    assert root is None and "\n" not in problem
    assert str(tmp_path / "empty") in problem and "METARUN_DATA" in problem
    assert "images_background.zip" in problem and "could not be downloaded" in problem
