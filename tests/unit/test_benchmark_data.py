"""The benchmark loaders on files in each real layout (generated: the images of CIFAR,
miniImageNet and tieredImageNet are not on this machine) and on the real MNIST."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from metarun.data.cifar import FC100, Cifar10, CifarFS
from metarun.data.formats import csv_rows, json_list
from metarun.data.mini_imagenet import MiniImageNet
from metarun.data.mnist import MNIST
from metarun.data.tiered_imagenet import TieredImageNet
from metarun.errors import CorruptDatasetError, DatasetNotFoundError
from metarun.types import Split
from tests import benchmark_files as files


def _open(cls: type, root: Path, **kw: object):  # type: ignore[no-untyped-def]
    return cls(root=str(root), cache_dir=str(root / "cache"), download=False, **kw)


def _tags(bank, stored: str) -> list[list[tuple[int, int]]]:  # type: ignore[no-untyped-def]
    """Per class of ``bank``, the (class, number) tags of its images, in order."""
    out, pixels = [], bank.pixels.numpy()
    for start, count in zip(bank.starts.tolist(), bank.class_counts.tolist(), strict=True):
        out.append([files.read_tag(pixels[i], stored) for i in range(start, start + count)])
    return out


def _disjoint(names: dict[Split, list[str]]) -> None:
    seen = [set(v) for v in names.values()]
    assert sum(len(s) for s in seen) == len(set().union(*seen))


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    files.write_cifar100(root)
    files.write_cifar10(root)
    return root


def test_cifar_fs_has_the_shipped_classes_with_train_and_test_images_merged(
        cifar_root: Path) -> None:
    data = _open(CifarFS, cifar_root)
    banks, names = data.load(), data.class_names()
    fine = files.cifar100_classes()[0]
    for split in Split:
        assert names[split] == [f for _, f in json_list("cifar-fs", split.value)]
        bank = banks[split]
        assert bank.pixels.dtype == torch.uint8 and bank.pixels.shape[1:] == (3, 32, 32)
        assert bank.class_counts.tolist() == [3] * len(names[split])  # 2 train + 1 test
        for name, tags in zip(names[split], _tags(bank, "chw"), strict=True):
            assert tags == [(fine.index(name), n) for n in range(3)]
    assert [len(names[s]) for s in Split] == [64, 16, 20]
    _disjoint(names)


def test_fc100_splits_by_superclass(cifar_root: Path) -> None:
    names = _open(FC100, cifar_root).class_names()
    _, _, coarse_of = files.cifar100_classes()
    assert [len(names[s]) for s in Split] == [60, 20, 20]
    for split in Split:
        assert {coarse_of[f] for f in names[split]} == set(json_list("fc100", split.value))
    _disjoint(names)


def test_cifar10_trains_on_five_classes_and_tests_on_official_test_images(
        cifar_root: Path) -> None:
    data = _open(Cifar10, cifar_root)
    banks, names = data.load(), data.class_names()
    assert names[Split.TRAIN] == files.CIFAR10_NAMES[:5]
    assert names[Split.VAL] == names[Split.TEST] == files.CIFAR10_NAMES[5:]
    # One image per class in each of the six batches: numbers 0-4 training, 5 the test batch.
    assert [n for _, n in _tags(banks[Split.TRAIN], "chw")[0]] == list(range(6))
    assert [n for _, n in _tags(banks[Split.VAL], "chw")[2]] == list(range(5))
    assert _tags(banks[Split.TEST], "chw")[2] == [(7, 5)]


def test_mnist_is_the_real_digits_split_five_and_five(mnist_root: Path) -> None:
    data = MNIST(root=str(mnist_root), cache_dir="unused", download=False)
    banks, names = data.load(), data.class_names()
    assert names == {Split.TRAIN: list("01234"), Split.VAL: list("56789"),
                     Split.TEST: list("56789")}
    # Every one of the official 60,000 training and 10,000 test images, used once.
    assert sum(int(b.class_counts.sum()) for b in banks.values()) == 70000
    assert int(banks[Split.TEST].class_counts.sum()) == 4861  # t10k's digits 5-9
    assert banks[Split.TRAIN].pixels.shape[1:] == (1, 28, 28)
    assert not banks[Split.TRAIN].uniform  # digits differ in count: a ragged bank


def _mnist_copy(mnist_root: Path, tmp_path: Path, name: str) -> Path:
    """A writable copy of the real MNIST under ``tmp_path``; returns the file ``name`` in it."""
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(mnist_root / "MNIST" / "raw", raw)
    os.chmod(raw / name, 0o644)
    return raw / name


def test_a_truncated_mnist_file_is_one_line(mnist_root: Path, tmp_path: Path) -> None:
    target = _mnist_copy(mnist_root, tmp_path, "t10k-images-idx3-ubyte")
    target.write_bytes(target.read_bytes()[:100000])
    with pytest.raises(CorruptDatasetError, match="truncated or not an IDX file") as e:
        MNIST(root=str(tmp_path), cache_dir="unused", download=False).load()
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mini")
    files.write_mini_pickles(root)
    return root


def test_mini_imagenet_pickles_give_the_shipped_classes(mini_root: Path) -> None:
    data = _open(MiniImageNet, mini_root)
    banks, names = data.load(), data.class_names()
    for split in Split:
        assert names[split] == files.mini_classes(split.value)
        assert banks[split].pixels.shape[1:] == (3, 84, 84)
        assert banks[split].class_counts.tolist() == [3] * len(names[split])
    assert [len(names[s]) for s in Split] == [64, 16, 20]
    _disjoint(names)
    label = 64 + 3  # the 4th validation class, numbered across splits in write order
    assert _tags(banks[Split.VAL], "hwc")[3] == [(label, n) for n in range(3)]
    assert (mini_root / "cache" / "mini-imagenet-84px.npy").is_file()


def test_the_cache_is_rebuilt_when_its_source_changes(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    files.write_mini_pickles(tmp_path, per_class=2)
    assert _open(MiniImageNet, tmp_path).load()[Split.TEST].per_class == 2
    with caplog.at_level(logging.WARNING):
        assert _open(MiniImageNet, tmp_path).load()[Split.TEST].per_class == 2
    assert not caplog.records  # the cache was used as it was
    files.write_mini_pickles(tmp_path, per_class=4)
    with caplog.at_level(logging.WARNING):
        assert _open(MiniImageNet, tmp_path).load()[Split.TEST].per_class == 4
    assert "the files it was built from have changed" in caplog.text


def test_mini_imagenet_images_folder_is_resized_once(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from metarun.data import mini_imagenet

    # Two of each class's 600 listed files keep the folder small; the names are the CSVs'.
    listed = {s: mini_imagenet.split_files(s) for s in Split}
    few = {s: {w: names[:2] for w, names in c.items()} for s, c in listed.items()}
    monkeypatch.setattr(mini_imagenet, "split_files", lambda split: few[split])
    folder = tmp_path / "mini-imagenet" / "images"
    folder.mkdir(parents=True)
    for split in Split:
        for names in few[split].values():
            for name in names:
                Image.new("RGB", (50, 40), (200, 10, 10)).save(folder / name)
    banks = _open(MiniImageNet, tmp_path).load()
    assert banks[Split.TRAIN].pixels.shape == (128, 3, 84, 84)
    assert int(banks[Split.TRAIN].pixels[0, 0].float().mean()) in range(195, 206)
    (folder / few[Split.TEST][files.mini_classes("test")[0]][0]).unlink()
    with pytest.raises(DatasetNotFoundError, match="lacks 1 of the images"):
        _open(MiniImageNet, tmp_path).load()


@pytest.mark.parametrize("layout", ["png", "npz"])
def test_tiered_imagenet_layouts_give_608_ragged_classes(layout: str, tmp_path: Path) -> None:
    files.write_tiered(tmp_path, layout)
    data = _open(TieredImageNet, tmp_path)
    banks, names = data.load(), data.class_names()
    base = 0
    for split in Split:
        wnids = [w for w, _ in files.tiered_classes(split.value)]
        assert names[split] == wnids
        assert banks[split].class_counts.tolist() == [(2, 3)[i % 2] for i in range(len(wnids))]
        for i, tags in enumerate(_tags(banks[split], "hwc")):
            assert sorted(tags) == [(base + i, n) for n in range((2, 3)[i % 2])]
        base += len(wnids)
    assert [len(names[s]) for s in Split] == [351, 97, 160]
    _disjoint(names)


def test_tiered_episodes_use_every_image_of_a_larger_class(tmp_path: Path) -> None:
    files.write_tiered(tmp_path, "npz", per_class=(2, 4))
    bank = _open(TieredImageNet, tmp_path).load()[Split.VAL]
    sampler = bank.sampler(5, 1, 1)
    batch = sampler.sample_indices(400, torch.Generator().manual_seed(0))
    sizes = bank.class_counts[batch.classes]
    assert (batch.images < sizes[..., None]).all()  # never past a class's last image
    assert int(batch.images[sizes == 4].max()) == 3  # and the larger classes' last ones drawn


# --- bad files ------------------------------------------------------------------------------

def test_an_html_page_saved_as_a_pickle_is_one_line(tmp_path: Path) -> None:
    folder = files.write_mini_pickles(tmp_path, per_class=1)
    (folder / "mini-imagenet-cache-train.pkl").write_text(
        "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>")
    with pytest.raises(CorruptDatasetError) as e:
        _open(MiniImageNet, tmp_path).load()
    message = str(e.value)
    assert "is an HTML page, not data" in message and "\n" not in message
    assert "mini-imagenet-cache-train.pkl" in message


def test_a_truncated_pickle_is_one_line(tmp_path: Path) -> None:
    folder = files.write_cifar100(tmp_path)
    train = folder / "train"
    train.write_bytes(train.read_bytes()[:5000])
    with pytest.raises(CorruptDatasetError, match="truncated or not in the expected format"):
        _open(CifarFS, tmp_path).load()


class _Payload:
    """Unpickling this runs ``os.system``: what a crafted data file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_is_refused_before_it_runs(tmp_path: Path) -> None:
    folder = files.write_cifar100(tmp_path)
    marker = tmp_path / "pwned"
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": _Payload(marker)}))
    assert not marker.exists()
    with pytest.raises(CorruptDatasetError, match="refused: it asks to load posix.system"):
        _open(CifarFS, tmp_path).load()
    assert not marker.exists()


def test_a_truncated_npz_is_one_line(tmp_path: Path) -> None:
    folder = files.write_tiered(tmp_path, "npz")
    npz = folder / "val_images.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(CorruptDatasetError, match="not a complete .npz"):
        _open(TieredImageNet, tmp_path).load()


def test_labels_of_another_split_are_refused(tmp_path: Path) -> None:
    folder = files.write_tiered(tmp_path, "npz")
    shutil.copy(folder / "test_labels.pkl", folder / "val_labels.pkl")
    with pytest.raises(CorruptDatasetError, match="not the 97 of the tieredImageNet val split"):
        _open(TieredImageNet, tmp_path).load()


@pytest.mark.parametrize(("cls", "says"), [
    (MiniImageNet, "mini-imagenet-cache-train.pkl"),
    (TieredImageNet, "{split}_images_png.pkl"),
    (CifarFS, "cifar-100-python.tar.gz"),
    (Cifar10, "cifar-10-python.tar.gz"),
])
def test_a_missing_dataset_says_what_to_put_where(cls: type, says: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as e:
        _open(cls, tmp_path).load()
    message = str(e.value)
    assert says in message and str(tmp_path) in message and "\n" not in message


def test_the_shipped_splits_are_the_published_counts() -> None:
    assert [len(csv_rows("tiered-imagenet", s, header=False)) for s in
            ("train", "val", "test")] == [351, 97, 160]
    assert [len(csv_rows("mini-imagenet", s, header=True)) for s in
            ("train", "val", "test")] == [38400, 9600, 12000]
    assert np.unique([r[1] for s in ("train", "val", "test")
                      for r in csv_rows("tiered-imagenet", s, header=False)]).size == 34


def test_a_file_of_the_official_size_with_other_bytes_fails_its_checksum(
        mnist_root: Path, tmp_path: Path) -> None:
    target = _mnist_copy(mnist_root, tmp_path, "t10k-labels-idx1-ubyte")
    data = bytearray(target.read_bytes())
    data[-1] = (data[-1] + 1) % 10  # one label changed: same size, valid format
    target.write_bytes(bytes(data))
    with pytest.raises(CorruptDatasetError, match="not the published 27ae3e4e"):
        MNIST(root=str(tmp_path), cache_dir="unused", download=False).load()


@pytest.mark.parametrize(("data", "write", "extra"), [
    ("cifar_fs", files.write_cifar100, ["data.augment=metaoptnet"]),
    ("tiered_imagenet", lambda root: files.write_tiered(root, "npz"),
     ["data.augment=feat", "data.memmap=true"]),
])
def test_a_run_on_a_benchmark_writes_its_summary(data: str, write, extra: list[str],  # type: ignore[no-untyped-def]
                                                 tmp_path: Path) -> None:
    from metarun.jobs.train import run
    from tests.helpers import compose_config

    write(tmp_path / "data")
    cfg = compose_config(f"data={data}", "algo=protonet", "backbone.hidden=8", "device=cpu",
                         f"data.root={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'c'}",
                         "task.queries=1", "train.iterations=2", "train.eval_every=2",
                         "eval.val_episodes=2", "eval.test_episodes=3", *extra)
    summary = run(cfg, tmp_path / "run").summary
    assert summary["test"]["episodes"] == 3 and 0.0 <= summary["test"]["acc"] <= 1.0


def test_a_png_that_does_not_decode_is_one_line(tmp_path: Path) -> None:
    folder = files.write_tiered(tmp_path, "png")
    path = folder / "test_images_png.pkl"
    encoded = pickle.loads(path.read_bytes())
    encoded[3] = np.frombuffer(b"\x89PNG\r\n\x1a\nnot really", dtype=np.uint8)
    path.write_bytes(pickle.dumps(encoded, protocol=2))
    with pytest.raises(CorruptDatasetError, match="image 3 is not a readable PNG"):
        _open(TieredImageNet, tmp_path).load()


def test_the_tiered_cache_is_reused_then_rebuilt_for_another_layout(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files.write_tiered(tmp_path, "npz")
    first = _open(TieredImageNet, tmp_path).load()[Split.TRAIN]
    with caplog.at_level(logging.WARNING):
        again = _open(TieredImageNet, tmp_path).load()[Split.TRAIN]
    assert not caplog.records and torch.equal(first.pixels, again.pixels)
    for npz in (tmp_path / "tiered-imagenet").glob("*.npz"):
        npz.unlink()
    files.write_tiered(tmp_path, "png")
    with caplog.at_level(logging.WARNING):
        from_png = _open(TieredImageNet, tmp_path).load()[Split.TRAIN]
    assert "the files it was built from have changed" in caplog.text
    assert torch.equal(from_png.pixels, first.pixels)  # PNG is lossless: the same pixels
