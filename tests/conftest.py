"""Shared fixtures. Omniglot comes from ``$METARUN_DATA`` or the workspace copy in
``../shared/data`` (never the network, then), else it is fetched once into the test cache,
else the tests that need it skip (tests/data.py); the decoded cache is built once per
session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The suite runs in two pytest-xdist workers (pyproject's addopts: -n 2) on a 2-core machine:
# each worker, and every process a test starts, gets one thread, since two torch processes
# with two threads each slow each other down about tenfold (OpenMP oversubscription).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)
    # The longest tests start first (a stable sort, the same in every worker), so that the
    # two workers end together instead of one waiting on a long test collected last. Under
    # the default suite's --dist loadfile a file goes to a worker whole, in the order its
    # first test comes, so a longest test brings its whole file forward.
    items.sort(key=lambda item: item.get_closest_marker("longest") is None)


def _test_cache() -> Path:
    return Path(os.environ.get("METARUN_TEST_CACHE")
                or Path.home() / ".cache" / "metarun-tests")


def _found(root: Path | None, problem: str) -> Path:
    """The data folder a finder of tests/data.py returned, or a skip saying what is missing."""
    if root is None:
        pytest.skip(problem)
    return root


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder whose ``omniglot/`` holds the official archives (tests/data.py)."""
    from tests.data import candidates, find_omniglot

    return _found(*find_omniglot(candidates(), _test_cache() / "data"))


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The folder whose ``MNIST/raw/`` holds the four IDX files (tests/data.py)."""
    from tests.data import candidates, find_mnist

    return _found(*find_mnist(candidates(), _test_cache() / "data"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decoded-Omniglot cache for the whole session (also used by CLI subprocesses)."""
    path = Path(os.environ.get("METARUN_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    return path


@pytest.fixture(scope="session")
def env(data_root: Path, cache_dir: Path) -> dict[str, str]:
    """Environment for ``metarun`` subprocesses: the shared data and the session cache."""
    return {**os.environ, "METARUN_DATA": str(data_root), "METARUN_CACHE": str(cache_dir)}


@pytest.fixture(scope="session")
def make_config(data_root: Path, cache_dir: Path):  # type: ignore[no-untyped-def]
    """Compose a CPU config on the shared data and session cache, plus ``overrides``."""
    from tests.helpers import compose_config

    def make(*overrides: str):  # type: ignore[no-untyped-def]
        return compose_config("device=cpu", f"data.root={data_root}",
                              f"data.cache_dir={cache_dir}", *overrides)

    return make


@pytest.fixture(scope="session")
def omniglot(data_root: Path, cache_dir: Path):  # type: ignore[no-untyped-def]
    """Loaded Omniglot splits (maml protocol, rotations) as ``dict[Split, ClassImages]``."""
    from metarun.data.omniglot import Omniglot

    return Omniglot(str(data_root), str(cache_dir)).load()
