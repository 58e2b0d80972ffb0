"""Nothing lost: atomic checkpoints with a fallback, exact resume, graceful stops, non-finite
values stopped before the update, one process per run directory."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from metarun.algorithms.protonet import ProtoNet
from metarun.backbones.conv4 import Conv4
from metarun.data.augment import ImagePipeline
from metarun.data.episodes import FixedEpisodes
from metarun.engine import checkpoint as ckpt
from metarun.engine.checkpoint import load_checkpoint, load_resumable, save_checkpoint
from metarun.engine.lock import RunLock, RunLockedError
from metarun.engine.metrics import MetricsLog
from metarun.engine.schedules import ScheduleSettings, make_schedule
from metarun.engine.trainer import Trainer, TrainSettings
from metarun.errors import NonFiniteLossError, Preempted
from metarun.jobs.resume import resume_point as _resume_point
from metarun.types import Split

# --- checkpoints -------------------------------------------------------------------------------


def test_a_save_that_fails_partway_leaves_the_previous_checkpoint(tmp_path: Path,
                                                                  monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def broken_save(obj, f):  # type: ignore[no-untyped-def]
        f.write(b"half a checkpoint")
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="killed while writing"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)}, keep_previous=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no partial file
    assert load_checkpoint(path)["step"] == 1


def test_a_full_disk_fails_clearly_and_keeps_the_old_checkpoint(tmp_path: Path,
                                                                 monkeypatch) -> None:  # type: ignore[no-untyped-def]
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(1000)})

    def full_disk(dir, prefix, suffix):  # type: ignore[no-untyped-def]  # noqa: A002
        return os.open("/dev/full", os.O_WRONLY), str(tmp_path / f"{prefix}x{suffix}")

    monkeypatch.setattr(ckpt.tempfile, "mkstemp", full_disk)
    with pytest.raises(OSError, match="could not write checkpoint .*last.pt.*unchanged") as e:
        save_checkpoint(path, {"step": 2, "w": torch.zeros(1000)}, keep_previous=True)
    assert e.value.errno == errno.ENOSPC
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path,
                                                                  caplog) -> None:  # type: ignore[no-untyped-def]
    for step in (1, 2):
        save_checkpoint(tmp_path / "last.pt", {"step": step, "w": torch.randn(100)},
                        keep_previous=True)
    assert load_resumable(tmp_path)[0]["step"] == 2
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    blob, path = load_resumable(tmp_path)
    assert (blob["step"], path.name) == (1, "last.prev.pt")
    assert "falling back to last.prev.pt" in caplog.text
    (tmp_path / "last.prev.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no loadable checkpoint"):
        load_resumable(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_resumable(tmp_path / "empty")


# --- training: resume, stop, non-finite ---------------------------------------------------------

STEPS = 6


def _trainer(omniglot, out: Path, iterations: int = STEPS, resume=None, seed: int = 0,  # type: ignore[no-untyped-def]
             init_seed: int = 0, schedule: str = "cosine", eval_every: int = 3,
             augment: str = "none", max_time: float | None = None) -> Trainer:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(init_seed)
    model = ProtoNet(Conv4((1, 28, 28), hidden=8))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = replace(omniglot[Split.TRAIN], pipeline=ImagePipeline(augment=augment, padding=2))
    sampler = train.sampler(5, 1, 2)
    val = FixedEpisodes(omniglot[Split.VAL].sampler(5, 1, 2), 2, seed, "val")
    settings = TrainSettings(iterations=iterations, meta_batch=2, eval_every=eval_every,
                             log_every=1, seed=seed, checkpoint_every=1, max_time=max_time)
    return Trainer(model, optimizer, sampler, val, settings,
                   checkpoint_dir=out / "checkpoints", metrics=MetricsLog(out / "metrics.jsonl"),
                   scheduler=make_schedule(optimizer, schedule, ScheduleSettings(iterations)),
                   resume=resume)


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.algorithm.state_dict().items()}


def _stop_at(trainer: Trainer, step: int, action) -> None:  # type: ignore[no-untyped-def]
    """Make ``action()`` happen during meta-training step ``step``."""
    inner, calls = trainer.algorithm.meta_train_step, [0]

    def patched(batch):  # type: ignore[no-untyped-def]
        calls[0] += 1
        out = inner(batch)
        return action(out) if calls[0] == step else out

    trainer.algorithm.meta_train_step = patched  # type: ignore[method-assign]


@pytest.mark.parametrize("augment", ["none", "metaoptnet"])
def test_a_stopped_run_resumes_exactly(omniglot, tmp_path: Path,  # type: ignore[no-untyped-def]
                                       augment: str) -> None:
    """Also with augmentation: its every draw comes from the saved episode generator."""
    full = _trainer(omniglot, tmp_path / "full", augment=augment)
    full.fit()
    expected = _weights(full)

    first = _trainer(omniglot, tmp_path / "cut", augment=augment)

    def sigint(out):  # type: ignore[no-untyped-def]
        signal.raise_signal(signal.SIGINT)  # the handler only sets a flag
        return out

    _stop_at(first, 4, sigint)
    with pytest.raises(Preempted, match="SIGINT after step 4"):
        first.fit()
    blob, _ = load_resumable(tmp_path / "cut" / "checkpoints")
    assert blob["step"] == 4

    torch.manual_seed(123)  # whatever the global RNG did since, the checkpoint restores it
    resumed = _trainer(omniglot, tmp_path / "cut", resume=blob, init_seed=99, augment=augment)
    assert resumed.start_step == 5
    resumed.fit()
    for k, v in _weights(resumed).items():
        assert torch.equal(v, expected[k]), k

    # Negative control: the same resume without the random states sees other episodes.
    blob.pop("rng")
    control = _trainer(omniglot, tmp_path / "control", resume=blob, augment=augment)
    control.fit()
    assert any(not torch.equal(v, expected[k]) for k, v in _weights(control).items())


def test_a_cosine_run_continued_to_more_steps_anneals_over_the_new_length(
        omniglot, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    _trainer(omniglot, tmp_path, iterations=STEPS).fit()
    blob, _ = load_resumable(tmp_path / "checkpoints")
    caplog.set_level("WARNING", logger="metarun")
    _trainer(omniglot, tmp_path, iterations=2 * STEPS, resume=blob).fit()
    assert f"laid over {STEPS} steps, and train.iterations is now {2 * STEPS}" in caplog.text
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in records if "lr" in r}
    for step in range(STEPS + 1, 2 * STEPS + 1):  # the rate a 12-step run takes there
        expected = 1e-3 * (1 + math.cos(math.pi * (step - 1) / (2 * STEPS))) / 2
        assert lrs[step] == pytest.approx(expected, rel=1e-9), step


def test_training_does_not_depend_on_how_often_it_validates(omniglot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    often = _trainer(omniglot, tmp_path / "often", eval_every=1)
    often.fit()
    rarely = _trainer(omniglot, tmp_path / "rarely", eval_every=STEPS)
    rarely.fit()
    for k, v in _weights(rarely).items():
        assert torch.equal(v, _weights(often)[k]), k


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_non_finite_value_stops_before_the_update(omniglot, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                    where: str) -> None:
    k = 4  # a constant learning rate: the reference run is shorter
    before = _trainer(omniglot, tmp_path / "ref", iterations=k - 1, schedule="constant")
    before.fit()
    expected = _weights(before)

    trainer = _trainer(omniglot, tmp_path / "nan", schedule="constant")
    if where == "loss":
        _stop_at(trainer, k, lambda out: type(out)(out.loss * float("nan"), out.metrics))
    else:
        param = next(trainer.algorithm.parameters())

        def poison(out):  # type: ignore[no-untyped-def]
            param.register_hook(lambda g: g * float("nan"))
            return out

        _stop_at(trainer, k, poison)
    with pytest.raises(NonFiniteLossError, match=f"at step {k}; stopped before the update"):
        trainer.fit()
    saved = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")
    assert saved["step"] == k - 1
    for name, v in saved["algorithm"].items():
        assert torch.equal(v, expected[name]), name


def test_a_nan_validation_score_never_becomes_best(omniglot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    trainer = _trainer(omniglot, tmp_path)
    real = trainer.algorithm.evaluate
    calls = [0]

    def evaluate(episode):  # type: ignore[no-untyped-def]
        calls[0] += 1
        loss, score = real(episode)
        return (loss, float("nan")) if calls[0] > 2 else (loss, score)  # the second val: NaN

    trainer.algorithm.evaluate = evaluate  # type: ignore[method-assign]
    result = trainer.fit()
    assert result.best_step == 3
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] == 3


def test_a_second_signal_exits_at_once(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from metarun.engine import signals

    class Exited(Exception):
        pass

    def fake_exit(code: int) -> None:
        raise Exited(code)

    monkeypatch.setattr(signals.os, "_exit", fake_exit)
    before = signal.getsignal(signal.SIGTERM)
    with signals.StopRequest() as stop:
        assert stop.signal is None
        signal.raise_signal(signal.SIGTERM)
        assert stop.signal == signal.SIGTERM  # the first only asks
        with pytest.raises(Exited) as e:
            signal.raise_signal(signal.SIGINT)
    assert e.value.args == (128 + signal.SIGINT,)
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


# --- run directories ---------------------------------------------------------------------------


def test_one_process_per_run_directory(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match="another metarun process is using"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released on exit
        pass


def test_resume_refuses_a_finished_run_or_a_changed_experiment(tmp_path: Path) -> None:
    config = {"algo": {"inner_lr": 0.4}, "train": {"iterations": 10, "resume": None}}
    assert _resume_point(tmp_path, config, explicit=False) is None
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        _resume_point(tmp_path, config, explicit=True)
    save_checkpoint(tmp_path / "checkpoints" / "last.pt", {"step": 5, "config": config})
    longer = {"algo": {"inner_lr": 0.4}, "train": {"iterations": 20, "resume": "x"}}
    assert _resume_point(tmp_path, longer, explicit=True)["step"] == 5
    changed = {"algo": {"inner_lr": 0.1}, "train": {"iterations": 10, "resume": None}}
    with pytest.raises(ValueError, match="different algo.inner_lr"):
        _resume_point(tmp_path, changed, explicit=False)
    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed"}))
    with pytest.raises(ValueError, match="already holds a completed run"):
        _resume_point(tmp_path, config, explicit=False)


def test_metrics_of_a_resumed_run_drop_the_steps_it_redoes(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in (1, 2, 3):
        log.write(step, "train", 1.0, 0.1, acc=0.5)
    log.write(3, "test", 1.0, 0.1, acc=0.5)
    log.close()
    with open(path, "a") as f:
        f.write('{"step": 4, "spl')  # cut short by a crash
    log = MetricsLog(path, resume_step=2)
    log.write(3, "train", 2.0, 0.2, acc=0.6)
    log.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["step"], r["split"], r["loss"]) for r in records] == [
        (1, "train", 1.0), (2, "train", 1.0), (3, "train", 2.0)]


def test_a_resumed_runs_progress_counts_from_its_step(omniglot, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Speed and ETA of a resumed run count only the steps this process trains."""
    from metarun.engine import progress, trainer

    first = _trainer(omniglot, tmp_path / "run", iterations=4)
    first.fit()
    blob, _ = load_resumable(tmp_path / "run" / "checkpoints")
    seen: list[progress.TrainProgress] = []

    class Recorded(progress.TrainProgress):
        def __enter__(self) -> progress.TrainProgress:
            seen.append(self)
            return super().__enter__()

    monkeypatch.setattr(trainer, "TrainProgress", Recorded)
    _trainer(omniglot, tmp_path / "run", iterations=STEPS, resume=blob).fit()
    assert [p.start for p in seen] == [4]
    # Two steps of the remaining ones done in 2 s: 1 step/s, and 6 - 6 = 0 s to go; a bar that
    # counted from 0 would claim 3 steps/s.
    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    caplog.set_level("INFO", logger="metarun")
    with progress.TrainProgress(STEPS, start=4, log_every=1, live=False) as bar:
        now[0] = 102.0
        bar.update(6, 0.5, 0.5)
    assert "1.00 it/s  eta 0:00:00" in caplog.text


def test_a_signal_while_a_failure_is_recorded_does_not_take_its_place() -> None:
    """Before training a signal stops the run at once; but once an error has left training,
    a signal (a launcher stopping the other processes) is noted, and the error stays."""
    from metarun.engine import signals

    with pytest.raises(Preempted), signals.StopRequest(at_once=True):
        signal.raise_signal(signal.SIGTERM)
    with pytest.raises(RuntimeError, match="lost a peer"), \
            signals.StopRequest(at_once=True) as outer:
        try:
            with signals.StopRequest():
                raise RuntimeError("lost a peer")
        finally:
            signal.raise_signal(signal.SIGTERM)  # while the run records the error
    assert outer.signal == signal.SIGTERM
    with pytest.raises(Preempted), signals.StopRequest(at_once=True) as outer:
        with signals.StopRequest():  # a stop that ends training is no failure
            raise Preempted(1, Path("last.pt"), signal.SIGTERM)
    assert not outer.failing
    # after training ended (the meta-test): a stop at once, which says so
    with pytest.raises(Preempted, match="after training, before the meta-test"), \
            signals.StopRequest(at_once=True):
        with signals.StopRequest():
            pass
        signal.raise_signal(signal.SIGTERM)


def test_a_schedulers_signal_is_handled_only_when_the_scheduler_handles_it() -> None:
    from metarun.engine.signals import StopRequest

    calls: list[int] = []

    def scheduler(signum, frame):  # type: ignore[no-untyped-def]
        calls.append(signum)

    before = signal.getsignal(signal.SIGUSR2)
    try:
        signal.signal(signal.SIGUSR2, signal.SIG_DFL)
        with StopRequest() as stop:  # nobody handles SIGUSR2: metarun leaves it alone
            assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
        signal.signal(signal.SIGUSR2, scheduler)  # submitit's requeue handler
        with StopRequest(at_once=True) as outer, StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert stop.signal == signal.SIGUSR2 and stop.handover is scheduler
            assert outer.signal is None and calls == []  # not yet: after the checkpoint
        assert signal.getsignal(signal.SIGUSR2) is scheduler  # restored
    finally:
        signal.signal(signal.SIGUSR2, before)
