"""Data parallelism is exact: two gloo processes, each training its half of every meta-batch
through the trainer's own step, give the one-process meta-gradient and logged loss and metric
(to 1e-6) and weights after a few steps (to 1e-5), for second-order MAML, ProtoNet and
Reptile; Reptile's carried inner Adam state is each rank's share's, the same on every rank."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from metarun.algorithms.base import Algorithm
from metarun.algorithms.maml import MAML
from metarun.algorithms.protonet import ProtoNet
from metarun.algorithms.reptile import Reptile
from metarun.backbones.conv4 import Conv4
from metarun.backbones.mlp import MLP
from metarun.engine.distributed import Dist
from metarun.engine.trainer import Trainer, TrainSettings
from metarun.errors import PeerError, exit_status
from metarun.types import EpisodeBatch

WAYS, SHOTS, TASKS, STEPS = 5, 2, 4, 3


class _RandomTasks:
    """Episodes of random 1x28x28 pixels drawn from the trainer's generator."""

    def sample(self, tasks: int, generator: torch.Generator) -> EpisodeBatch:
        labels = torch.arange(WAYS)
        return EpisodeBatch(
            support_x=torch.rand(tasks, WAYS * SHOTS, 1, 28, 28, generator=generator),
            support_y=labels.repeat(SHOTS).expand(tasks, -1),
            query_x=torch.rand(tasks, 2 * WAYS, 1, 28, 28, generator=generator),
            query_y=labels.repeat(2).expand(tasks, -1),
            class_ids=labels.expand(tasks, -1),
        )


def _conv4() -> Conv4:
    return Conv4((1, 28, 28), hidden=8)


#: Second-order MAML (two inner steps), ProtoNet and Reptile (2 inner steps).
ALGORITHMS: dict[str, Callable[[], Algorithm]] = {
    "maml": lambda: MAML(MLP((1, 28, 28), hidden=(32, 32)), WAYS, inner_lr=0.4,
                         inner_steps=2, first_order=False),
    "maml-conv4": lambda: MAML(_conv4(), WAYS, inner_lr=0.4, inner_steps=2),
    "protonet": lambda: ProtoNet(_conv4()),
    "reptile": lambda: Reptile(_conv4(), WAYS, inner_lr=0.1, inner_steps=2,
                                inner_optimizer="sgd"),
    "reptile-carried": lambda: Reptile(_conv4(), WAYS, inner_lr=0.01, inner_steps=2,
                                        carry_adam_state=True),
}

#: Not the one-process run by design (docs/algorithms.md): Reptile's carried inner Adam state
#: runs through each rank's share of the tasks in order, and the ranks' states are averaged
#: after every step, as running statistics are; the one-process state runs through all tasks.
SHARE_STATE = {"reptile-carried"}


#: Compared on the meta-gradient only: on random pixels, Conv-4's max-pooling (windows of
#: ReLU zeros) makes the gradient jump with rounding-level changes of the weights (measured:
#: weights moved by 1e-7 before step 3 change its gradient by 1e-2, in one process), so
#: weights after several steps differ for reasons that are not data parallelism's.
GRADIENT_ONLY = {"maml-conv4"}


def _train(dist: Dist) -> dict[str, Any]:
    """Each algorithm's meta-gradient of step 1 and its weights after :data:`STEPS` steps."""
    results = {}
    for name, make in ALGORITHMS.items():
        torch.manual_seed(0)
        algorithm = make()
        settings = TrainSettings(iterations=STEPS, meta_batch=TASKS, eval_every=STEPS,
                                 log_every=1, seed=0)
        # SGD: Adam divides each gradient by its own scale, so for a gradient that is zero in
        # exact arithmetic (a convolution's bias before batch norm) it turns rounding-level
        # differences between the two summation orders into steps of the full learning rate.
        optimizer = torch.optim.SGD(algorithm.parameters(), lr=0.05)
        trainer = Trainer(algorithm, optimizer,
                          _RandomTasks(), None, settings,  # type: ignore[arg-type]
                          checkpoint_dir=Path("unused"), metrics=None, dist=dist)
        grads, logged = None, []
        for step in range(1, STEPS + 1):
            logged.append(trainer._update(step))  # the step's loss and metric
            if grads is None:
                grads = {n: p.grad.clone() for n, p in algorithm.named_parameters()
                         if p.grad is not None}
        results[name] = {"grads": grads, "logged": logged, "state": algorithm.state_dict(),
                         "weights": {n: p.detach() for n, p in algorithm.named_parameters()}}
    return results


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist = Dist.from_env(torch.device("cpu"))
    results = _train(dist)
    torch.save(results, f"{out}.{rank}")
    torch_dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("dist") / "results"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(f"{out}.{r}", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def one_process() -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: the same kernels, the same rounding
    try:
        return _train(Dist())
    finally:
        torch.set_num_threads(threads)


def _assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], atol: float,
                  what: str) -> None:
    assert got.keys() == want.keys(), what
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=atol,
                                   msg=lambda m, k=key: f"{what}, {k}: {m}")


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_two_processes_give_the_one_process_gradient_and_weights(
        name: str, one_process: dict[str, Any], two_processes: list[dict[str, Any]]) -> None:
    one = one_process[name]
    for rank, results in enumerate(two_processes if name not in SHARE_STATE else []):
        _assert_close(results[name]["grads"], one["grads"], 1e-6, f"{name} rank {rank} grad")
        # the logged loss and metric of step 1 (later ones follow weights that may differ)
        assert results[name]["logged"][0] == pytest.approx(one["logged"][0], rel=1e-6, abs=1e-6)
        if name not in GRADIENT_ONLY:
            _assert_close(results[name]["weights"], one["weights"], 1e-5,
                          f"{name} rank {rank} weights after {STEPS} steps")
    # The ranks hold the same weights and buffers. Running statistics are the mean of the
    # ranks' (each from its own tasks), not the one-process ones: a rank's moving average
    # runs over its share only.
    for key, value in two_processes[0][name]["state"].items():
        assert torch.equal(value, two_processes[1][name]["state"][key]), key


def test_a_carried_inner_state_is_each_ranks_share_averaged_over_the_ranks(
        one_process: dict[str, Any], two_processes: list[dict[str, Any]]) -> None:
    """Each rank's Reptile fine-tunes its share of the tasks in order from the carried Adam
    state: it counts the share's inner steps (half the one-process count) and carries its
    squared-gradient means, which the ranks share (equal on both, as the test above checks)."""
    inner_steps = 2 * STEPS * TASKS
    assert int(one_process["reptile-carried"]["state"]["carried.steps"]) == inner_steps
    for results in two_processes:
        state = results["reptile-carried"]["state"]
        assert int(state["carried.steps"]) == inner_steps // 2
        assert all(bool((v > 0).any()) for k, v in state.items() if k.startswith("carried.v"))


def test_a_meta_batch_that_does_not_divide_is_refused() -> None:
    batch = _RandomTasks().sample(3, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="a meta-batch of 3 cannot be divided between 2"):
        Dist(rank=0, world=2).shard(batch)
    halves = [Dist(rank=r, world=2).shard(_RandomTasks().sample(4, torch.Generator()
                                                                .manual_seed(0)))
              for r in range(2)]
    whole = _RandomTasks().sample(4, torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([h.query_x for h in halves]), whole.query_x)


def test_a_peer_error_exits_with_the_status_of_the_rank_that_stopped() -> None:
    assert exit_status(PeerError("rank 0 stopped the run: Preempted", 75)) == 75
    assert exit_status(PeerError("lost a peer")) == 1


def test_a_meta_batch_the_processes_cannot_share_is_refused_before_anything_runs() -> None:
    from metarun.validate import validate_config
    from tests.helpers import compose_config

    with pytest.raises(ValueError, match="train.meta_batch = 4 cannot be divided between 3 "
                                         "processes: choose a multiple of 3"):
        validate_config(compose_config("data=sinusoid", "dist.nproc=3"))
    with pytest.raises(ValueError, match="dist.nproc must be at least 1"):
        validate_config(compose_config("data=sinusoid", "dist.nproc=0"))
    validate_config(compose_config("data=sinusoid", "dist.nproc=2"))


def test_under_a_launcher_other_ranks_use_a_scratch_directory_and_sweeps_are_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from metarun.cli.ranks import check_launcher, follower_args

    args = ["algo=protonet", "hydra.run.dir=/somewhere"]
    assert follower_args(args) == args and check_launcher(["-m", *args]) is None
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    moved = follower_args(args)
    assert moved[0] == "algo=protonet" and len(moved) == 2
    scratch = Path(moved[1].removeprefix("hydra.run.dir="))
    assert scratch.parent == tmp_path and scratch.name.startswith("metarun-rank1-")
    assert "cannot run under torchrun" in (check_launcher(["-m", *args]) or "")


def test_parallel_sweep_jobs_take_free_slots_their_share_of_threads_and_their_own_gpu(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from metarun.cli.parallel import machine_share, workers

    gpus: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # a faked machine of 2 GPUs
    monkeypatch.setattr(torch.cuda, "set_device", gpus.append)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    hydra = OmegaConf.create({
        "launcher": {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher."
                                 "JoblibLauncher", "n_jobs": 2},
        "sweep": {"dir": str(tmp_path)}, "job": {"num": 5}})
    assert workers(hydra) == 2 and workers(OmegaConf.create({"launcher": {"n_jobs": 2}})) == 1
    assert workers(OmegaConf.merge(hydra, {"launcher": {"n_jobs": -1}})) == 8  # joblib's -1
    cfg = OmegaConf.create({"threads": None})
    threads = torch.get_num_threads()
    try:
        with machine_share(cfg, hydra):  # a second job while the first still runs
            assert torch.get_num_threads() == 4
            with machine_share(cfg, hydra):
                assert torch.get_num_threads() == 4
        assert gpus == [0, 1]  # its own slot, so its own GPU, whatever its job number
        with machine_share(cfg, hydra):
            pass
        assert gpus == [0, 1, 0]  # slot 0 is free again
        with machine_share(OmegaConf.create({"threads": 3}), hydra):
            assert torch.get_num_threads() == 3  # the key wins over the share
    finally:
        torch.set_num_threads(threads)


def test_joining_a_group_registers_its_destruction_at_exit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Left to the interpreter's finalization, a gloo group can abort a process whose run
    succeeded (exit -6); ``Dist.from_env`` destroys it at exit instead."""
    import atexit

    from metarun.engine import distributed

    registered: list[Callable[[], None]] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    # A launcher's environment; a group of one process, so it forms at once in this process.
    monkeypatch.setattr(distributed, "env_world_size", lambda: 2)
    for key, value in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0",
                           WORLD_SIZE="1").items():
        monkeypatch.setenv(key, value)
    assert not torch_dist.is_initialized()
    try:
        dist = Dist.from_env(torch.device("cpu"))
        assert (dist.rank, dist.world) == (0, 1) and torch_dist.is_initialized()
        assert registered == [distributed.leave_group]
        registered[0]()
        assert not torch_dist.is_initialized()
        distributed.leave_group()  # nothing left to destroy: a no-op
    finally:
        distributed.leave_group()


@pytest.mark.parametrize(("body", "status", "printed"), [
    ("pass", 0, ""),
    ("sys.exit(3)", 3, ""),
    ("sys.exit('no data here')", 1, "no data here"),
    ("raise RuntimeError('boom')", 1, "RuntimeError: boom"),
])
def test_a_rank_ends_with_its_commands_status_after_the_exit_handlers(
        body: str, status: int, printed: str) -> None:
    """end_rank leaves by os._exit (skipping the interpreter's finalization, where a gloo
    group can abort the process) but runs the exit handlers first and keeps the status."""
    code = ("import atexit, sys\n"
            "from metarun.cli.ranks import end_rank\n"
            "atexit.register(print, 'handlers ran')\n"
            "def body():\n"
            "    print('partial line, not flushed', end='')\n"
            f"    {body}\n"
            "end_rank(body)\n"
            "print('never reached')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == status, proc.stderr
    assert proc.stdout == "partial line, not flushedhandlers ran\n"
    assert printed in proc.stderr
