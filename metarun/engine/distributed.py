"""Data-parallel meta-training over ``torch.distributed``, and the one-process default.

Every process draws the whole meta-batch from the same episode generator (the same seed, so
the same state on every rank) and keeps its own contiguous share of it. The processes run
their inner loops locally, each backpropagates the mean loss of its share with an ordinary
``backward`` (second-order inner gradients included: no DDP hooks, which
``autograd.grad(create_graph=True)`` would bypass), and the gradients are averaged across
processes before the optimizer step. Equal shares make the average of the shares' means the
mean over the meta-batch, so the meta-gradient is the one-process one and the weights stay
identical on every rank.

Batch-norm buffers (running statistics) see only a rank's share; they are averaged across
ranks after every step, so every rank holds the same, but they are not the one-process
running statistics (an average of per-share updates, not one sequence of updates). Batch
statistics (``algo.bn_mode=batch``, the gradient methods' default) are per task and exact.
"""

from __future__ import annotations

import atexit
import functools
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn

from metarun.errors import PeerError
from metarun.world import env_world_size

_R = TypeVar("_R")
_F = TypeVar("_F", bound=Callable[..., Any])

#: How long a collective waits for a peer before failing (a peer that died without the
#: launcher noticing makes the others fail after this, not hang).
TIMEOUT = timedelta(minutes=30)


def _collective(method: _F) -> _F:
    """A collective whose peer is gone (crashed, killed) fails as a :class:`PeerError`, an
    expected failure of one line, not a backend traceback."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (RuntimeError, torch_dist.DistError) as e:
            if isinstance(e, PeerError):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PeerError("lost another process of this data-parallel run (it crashed or "
                            f"was stopped; its log says why): {first}") from e
    return wrapper  # type: ignore[return-value]


def leave_group() -> None:
    """Destroy the process group, if there is one (at exit). Why: a gloo group left to the
    interpreter's finalization can abort a process whose run succeeded ("terminate called
    without an active exception", exit -6; pytorch/pytorch#190489), as a resumed two-process
    run did once in CI."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


@dataclass(frozen=True)
class Dist:
    """The process's place in a data-parallel run: ``rank`` of ``world`` processes.

    ``Dist()`` is one process: every method is then the identity or a no-op.
    """

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, metrics and the summary."""
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> Dist:
        """Join the process group the launcher's environment describes (gloo on CPU, NCCL on
        CUDA), once; one process outside a launcher."""
        world = env_world_size()
        if world == 1:
            return cls()
        if not torch_dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch_dist.init_process_group(backend, timeout=TIMEOUT)
            atexit.register(leave_group)
        return cls(torch_dist.get_rank(), torch_dist.get_world_size())

    def shard(self, batch: _R) -> _R:
        """This rank's contiguous share of a meta-batch (every tensor field of a batch
        dataclass sliced on its first dimension)."""
        if self.world == 1:
            return batch
        if not is_dataclass(batch):
            raise TypeError(f"cannot divide a {type(batch).__name__} between processes")
        moved = {}
        for f in fields(batch):
            value = getattr(batch, f.name)
            n = value.shape[0]
            if n % self.world:
                raise ValueError(f"a meta-batch of {n} cannot be divided between "
                                 f"{self.world} processes")
            share = n // self.world
            moved[f.name] = value[self.rank * share:(self.rank + 1) * share]
        return replace(batch, **moved)  # type: ignore[type-var]

    @_collective
    def average_gradients(self, parameters: list[nn.Parameter]) -> None:
        """Replace every gradient by its mean over the ranks, in one all-reduce. Parameters
        without a gradient are left without one (the optimizer skips them, as in one
        process): the same on every rank, since every rank runs the same computation."""
        if self.world == 1:
            return
        params = [p for p in parameters if p.grad is not None]
        flat = torch.cat([p.grad.reshape(-1) for p in params]) / self.world  # type: ignore[union-attr]
        torch_dist.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    @_collective
    def average_buffers(self, module: nn.Module) -> None:
        """Floating-point buffers (running statistics) averaged over the ranks; the others
        (batch counts) taken from rank 0."""
        if self.world == 1:
            return
        with torch.no_grad():
            for buffer in module.buffers():
                if buffer.is_floating_point():
                    torch_dist.all_reduce(buffer)
                    buffer.div_(self.world)
                else:
                    torch_dist.broadcast(buffer, 0)

    @_collective
    def mean(self, *values: float) -> list[float]:
        """The mean over the ranks of each value (NaN anywhere makes the mean NaN)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        torch_dist.all_reduce(t)
        return (t / self.world).tolist()

    @_collective
    def any(self, *flags: int) -> list[int]:
        """The largest value over the ranks of each (a flag raised on any rank, or the
        signal any rank received)."""
        if self.world == 1:
            return list(flags)
        t = torch.tensor(flags, dtype=torch.int64)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return [int(v) for v in t.tolist()]

    def from_main(self, fn: Callable[[], _R]) -> _R:
        """``fn()`` run on rank 0 alone; every rank gets its (picklable) result."""
        if self.world == 1:
            return fn()
        box: list[Any] = [fn() if self.is_main else None]
        self._broadcast(box)
        return box[0]

    @_collective
    def _broadcast(self, box: list[Any]) -> None:
        torch_dist.broadcast_object_list(box, 0)

    @_collective
    def gather(self, value: _R) -> list[_R]:
        """Every rank's ``value``, in rank order (on every rank)."""
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        torch_dist.all_gather_object(out, value)
        return out
