"""The Omniglot protocols, the cache, and finding or fetching the archives (no network)."""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from metarun.data import omniglot as og
from metarun.data.omniglot import CorruptDatasetError, DatasetNotFoundError, Omniglot
from metarun.types import Split


@pytest.fixture(scope="module")
def characters(data_root: Path, cache_dir: Path):  # type: ignore[no-untyped-def]
    return Omniglot(str(data_root), str(cache_dir))._characters()


def test_characters(characters) -> None:  # type: ignore[no-untyped-def]
    assert characters.images.shape == (1623, 20, 28, 28)
    assert characters.images.dtype == torch.uint8
    assert len(set(characters.alphabets)) == 50
    assert sum(a.startswith("images_background/") for a in set(characters.alphabets)) == 30


def test_maml_protocol(data_root: Path, cache_dir: Path, characters) -> None:  # type: ignore[no-untyped-def]
    ds = Omniglot(str(data_root), str(cache_dir), split="maml")
    members = ds._split_characters(characters)
    sizes = {s: len(m) for s, m in members.items()}
    assert sizes == {Split.TRAIN: 1100, Split.VAL: 100, Split.TEST: 423}
    union = torch.cat(list(members.values()))
    assert len(set(union.tolist())) == 1623  # disjoint, and every character used
    assert ds._split_characters(characters)[Split.TEST].tolist() == members[Split.TEST].tolist()


def test_rotations_make_four_classes_per_character(omniglot) -> None:  # type: ignore[no-untyped-def]
    assert {s: b.num_classes for s, b in omniglot.items()} == {
        Split.TRAIN: 4400, Split.VAL: 400, Split.TEST: 1692}
    train = omniglot[Split.TRAIN].images
    n = 1100
    assert torch.equal(train[n + 7], train[7].rot90(1, dims=(-2, -1)))
    assert torch.equal(train[3 * n + 7], train[7].rot90(3, dims=(-2, -1)))


def test_lake_protocol(data_root: Path, cache_dir: Path, characters) -> None:  # type: ignore[no-untyped-def]
    ds = Omniglot(str(data_root), str(cache_dir), split="lake", rotations=False)
    members = ds._split_characters(characters)
    alphabets = {s: {characters.alphabets[i] for i in m.tolist()} for s, m in members.items()}
    assert len(alphabets[Split.TRAIN]) == 25 and len(alphabets[Split.VAL]) == 5
    assert len(alphabets[Split.TEST]) == 20
    assert all(a.startswith("images_evaluation/") for a in alphabets[Split.TEST])
    assert not alphabets[Split.TRAIN] & alphabets[Split.VAL]
    assert len(members[Split.TEST]) == 659
    assert len(members[Split.TRAIN]) + len(members[Split.VAL]) == 964


def test_within_alphabet_groups(data_root: Path, cache_dir: Path) -> None:
    splits = Omniglot(str(data_root), str(cache_dir), within_alphabet=True).load()
    assert all(b.groups is not None for b in splits.values())
    assert Omniglot(str(data_root), str(cache_dir)).load()[Split.TEST].groups is None


def test_preprocess_matches_the_cache(data_root: Path, cache_dir: Path, characters) -> None:  # type: ignore[no-untyped-def]
    name = characters.names[0]
    with zipfile.ZipFile(data_root / "omniglot" / "images_background.zip") as z:
        first = sorted(n for n in z.namelist() if n.startswith(name + "/"))[0]
        image = Image.open(io.BytesIO(z.read(first)))
        image.load()
    ds = Omniglot(str(data_root), str(cache_dir))
    x = ds.preprocess([image, image.convert("L")])
    assert x.shape == (2, 1, 28, 28)
    expected = characters.images[0, 0].float() / 255
    torch.testing.assert_close(x[0, 0], expected)
    torch.testing.assert_close(x[1, 0], expected)


def test_second_load_uses_the_cache(data_root: Path, cache_dir: Path, characters,  # type: ignore[no-untyped-def]
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decode(*_: object) -> None:
        raise AssertionError("decoded although a valid cache exists")

    monkeypatch.setattr(og, "_decode", no_decode)
    again = Omniglot(str(data_root), str(cache_dir))._characters()
    assert torch.equal(again.images, characters.images)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "tamper"])
def test_corrupt_cache_is_rebuilt(damage: str, data_root: Path, cache_dir: Path, characters,  # type: ignore[no-untyped-def]
                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  caplog: pytest.LogCaptureFixture) -> None:
    ds = Omniglot(str(data_root), str(tmp_path))
    shutil.copy(Omniglot(str(data_root), str(cache_dir)).cache_path, ds.cache_path)
    if damage == "truncate":
        data = ds.cache_path.read_bytes()
        ds.cache_path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        ds.cache_path.write_bytes(b"not a cache")
    else:  # a readable file whose pixels no longer match its checksum
        blob = torch.load(ds.cache_path, weights_only=True)
        blob["images"][0, 0, 0, 0] ^= 1
        torch.save(blob, ds.cache_path)
    decoded = []
    monkeypatch.setattr(og, "_decode", lambda *a: decoded.append(1) or characters)
    with caplog.at_level(logging.WARNING):
        chars = ds._characters()
    assert decoded == [1]
    assert "rebuilding" in caplog.text
    assert torch.equal(chars.images, characters.images)
    monkeypatch.setattr(og, "_decode", lambda *a: pytest.fail("rebuilt cache was not reused"))
    assert torch.equal(ds._characters().images, characters.images)


def _serve(tmp_path: Path, data_root: Path) -> str:
    served = tmp_path / "served"
    served.mkdir()
    for name in og.SOURCES:
        shutil.copy(data_root / "omniglot" / f"{name}.zip", served)
    return served.as_uri()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_when_missing(tmp_path: Path, data_root: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(og, "URL_PREFIX", _serve(tmp_path, data_root))
    monkeypatch.setattr(og, "MD5", {n: _md5(data_root / "omniglot" / f"{n}.zip")
                                    for n in og.SOURCES})
    ds = Omniglot(str(tmp_path / "data"), str(tmp_path / "cache"))
    path = ds._locate("images_evaluation")
    assert path == tmp_path / "data" / "omniglot" / "images_evaluation.zip"
    assert _md5(path) == og.MD5["images_evaluation"]
    assert not list(path.parent.glob("*.part"))


def test_download_with_wrong_checksum_leaves_nothing(tmp_path: Path, data_root: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(og, "URL_PREFIX", _serve(tmp_path, data_root))
    ds = Omniglot(str(tmp_path / "data"), str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError, match="checksum mismatch"):
        ds._locate("images_background")
    assert not (tmp_path / "data").exists()  # a failed download creates no folder


def test_offline_message_says_what_to_put_where(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(og, "URL_PREFIX", (tmp_path / "nowhere").as_uri())
    ds = Omniglot(str(tmp_path / "data"), str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError) as info:
        ds.load()
    message = str(info.value)
    where = str(tmp_path / "data" / "omniglot")
    assert where in message
    assert "images_background.zip" in message and "images_evaluation.zip" in message
    assert "METARUN_DATA" in message
    assert not (tmp_path / "data").exists()  # a data.root that does not exist stays so


def test_download_disabled(tmp_path: Path) -> None:
    ds = Omniglot(str(tmp_path), str(tmp_path / "cache"), download=False)
    with pytest.raises(DatasetNotFoundError, match="data.download is false"):
        ds.load()


def test_corrupt_archive(tmp_path: Path, data_root: Path) -> None:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    (folder / "images_background.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    shutil.copy(data_root / "omniglot" / "images_evaluation.zip", folder)
    with pytest.raises(CorruptDatasetError, match="images_background.zip is not a readable zip"):
        Omniglot(str(tmp_path), str(tmp_path / "cache")).load()


def test_incomplete_archive(tmp_path: Path, data_root: Path) -> None:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    with zipfile.ZipFile(data_root / "omniglot" / "images_background.zip") as src, \
            zipfile.ZipFile(folder / "images_background.zip", "w") as dst:
        for name in src.namelist()[:50]:
            dst.writestr(name, src.read(name))
    shutil.copy(data_root / "omniglot" / "images_evaluation.zip", folder)
    with pytest.raises(CorruptDatasetError, match="Omniglot's images_background has 964"):
        Omniglot(str(tmp_path), str(tmp_path / "cache")).load()


@pytest.mark.parametrize(("key", "value"), [("split", "vinyals"), ("image_size", 4),
                                            ("val_alphabets", 0)])
def test_bad_arguments(key: str, value: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"data.{key}"):
        Omniglot(str(tmp_path), str(tmp_path), **{key: value})  # type: ignore[arg-type]
