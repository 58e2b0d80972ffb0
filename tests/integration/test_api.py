"""The Python API: a checkpoint from a real run, applied to raw images."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import metarun
from metarun.cli import _config_dir
from metarun.run import fixed_episodes, run
from metarun.types import Split
from tests.integration.cli import TINY


def _run(tmp: Path, data_root: Path, cache_dir: Path, *overrides: str) -> Path:
    with initialize_config_dir(config_dir=_config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            *TINY, "device=cpu", f"data.root={data_root}", f"data.cache_dir={cache_dir}",
            *overrides])
    run(cfg, tmp)
    return tmp


@pytest.fixture(scope="module", params=["maml", "protonet"])
def finished(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             data_root: Path, cache_dir: Path) -> Path:
    return _run(tmp_path_factory.mktemp(request.param), data_root, cache_dir,
                f"algo={request.param}")


def test_learner_reproduces_the_runs_test_accuracy(finished: Path, omniglot) -> None:  # type: ignore[no-untyped-def]
    learner = metarun.load(str(finished / "checkpoints" / "best.pt"), device="cpu")
    summary = json.loads((finished / "summary.json").read_text())
    cfg = learner.config
    episodes = fixed_episodes(cfg, omniglot, Split.TEST)
    assert episodes.digest() == summary["test"]["episodes_sha256"]
    accs = []
    for ep in episodes:
        logits = learner.adapt(ep.support_x, ep.support_y)(ep.query_x)
        assert logits.shape == (len(ep.query_y), cfg.eval.ways)
        accs.append(float((logits.argmax(-1) == ep.query_y).float().mean()))
    assert sum(accs) / len(accs) == pytest.approx(summary["test"]["acc"], abs=1e-6)


def test_raw_images_in_logits_out(finished: Path, data_root: Path) -> None:
    from PIL import Image

    learner = metarun.load(str(finished / "checkpoints" / "last.pt"), device="cpu")
    with zipfile.ZipFile(data_root / "omniglot" / "images_evaluation.zip") as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        # 5 characters, 2 drawings each: the first as support, the second as query.
        chars = sorted({n.rsplit("/", 1)[0] for n in names})[:5]
        pick = [[n for n in names if n.startswith(c + "/")][:2] for c in chars]
        images = [[Image.open(io.BytesIO(z.read(n))) for n in pair] for pair in pick]
    support = learner.preprocess([pair[0] for pair in images])
    query = learner.preprocess([pair[1] for pair in images])
    assert support.shape == (5, 1, 28, 28)
    logits = learner.adapt(support, [0, 1, 2, 3, 4])(query)
    assert logits.shape == (5, 5) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="support_y"):
        learner.adapt(support, [0, 1, 2, 3, 5])  # label 4 missing


def test_checkpoint_with_foreign_target_is_refused(finished: Path, tmp_path: Path) -> None:
    blob = torch.load(finished / "checkpoints" / "best.pt", weights_only=True)
    blob["config"]["algo"]["_target_"] = "os.system"
    torch.save(blob, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="config.algo._target_ = 'os.system' is not allowed"):
        metarun.load(str(tmp_path / "evil.pt"), device="cpu")


def test_checkpoint_with_pickled_code_is_refused(finished: Path, tmp_path: Path) -> None:
    blob = torch.load(finished / "checkpoints" / "best.pt", weights_only=True)
    blob["hook"] = print  # a callable: only loadable by unpickling code
    torch.save(blob, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="could not be loaded as a metarun checkpoint"):
        metarun.load(str(tmp_path / "code.pt"), device="cpu")
