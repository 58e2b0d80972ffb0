"""The Python API: a checkpoint from a real run, applied to raw images."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

import metarun
from metarun.build import fixed_episodes
from metarun.jobs.train import run
from metarun.types import Split
from tests.integration.cli import TINY


@pytest.fixture(scope="module", params=["maml", "protonet", "siamese", "blackbox", "baseline"])
def finished(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             make_config) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp(request.param)
    run(make_config(*TINY, f"algo={request.param}"), out)
    return out


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
    with pytest.raises(ValueError, match="algo._target_ = 'os.system' is not a component"):
        metarun.load(str(tmp_path / "evil.pt"), device="cpu")


def test_checkpoint_with_pickled_code_is_refused(finished: Path, tmp_path: Path) -> None:
    blob = torch.load(finished / "checkpoints" / "best.pt", weights_only=True)
    blob["hook"] = print  # a callable: only loadable by unpickling code
    torch.save(blob, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="is not a loadable metarun checkpoint"):
        metarun.load(str(tmp_path / "code.pt"), device="cpu")


def test_regression_checkpoint_adapts_to_a_sine(tmp_path: Path) -> None:
    import math

    from tests.helpers import compose_config

    cfg = compose_config("device=cpu", "data=sinusoid", "train.iterations=300",
                         "train.meta_batch=8", "train.eval_every=300", "eval.val_episodes=10",
                         "eval.test_episodes=20")
    run(cfg, tmp_path)
    learner = metarun.load(str(tmp_path / "checkpoints" / "best.pt"), device="cpu")
    xs = [-4.0 + 0.8 * i for i in range(10)]
    amplitude, phase = 3.0, 1.0
    ys = [amplitude * math.sin(x - phase) for x in xs]
    predict = learner.adapt(learner.preprocess(xs), ys)
    query = learner.preprocess([-2.5, 0.3, 2.2])
    values = predict(query)
    assert values.shape == (3, 1) and torch.isfinite(values).all()
    target = amplitude * torch.sin(query - phase)
    unadapted = learner.algorithm.net(query)
    # Ten points of one sine are enough for the meta-learned model to get closer to it.
    assert (values - target).pow(2).mean() < (unadapted - target).pow(2).mean()
    with pytest.raises(ValueError, match="one target per support input"):
        learner.adapt(learner.preprocess(xs), ys[:-1])


def test_bad_support_sets_are_named_not_truncated(finished: Path) -> None:
    learner = metarun.load(str(finished / "checkpoints" / "best.pt"), device="cpu")
    support = torch.rand(5, 1, 28, 28)
    with pytest.raises(ValueError, match="whole-number labels"):
        learner.adapt(support, [0.5, 1, 2, 3, 4])  # not silently label 0
    with pytest.raises(ValueError, match="one label per support image"):
        learner.adapt(support, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="support set is empty"):
        learner.adapt(support[:0], [])
    with pytest.raises(ValueError, match="at least one input"):
        learner.preprocess([])
    assert learner.adapt(support, [0.0, 1.0, 2.0, 3.0, 4.0])(support).shape == (5, 5)
