"""Running under ``torchrun`` (or ``accelerate launch``, or ``srun`` + torchrun): who am I?

A launcher starts one process per device and tells each, through environment variables, its
place: ``RANK`` / ``WORLD_SIZE`` (all processes, all nodes), ``LOCAL_RANK`` /
``LOCAL_WORLD_SIZE`` (this node) and ``MASTER_ADDR`` / ``MASTER_PORT`` (the rendezvous).
:func:`context` reads them; :func:`init` joins the process group (NCCL on CUDA, gloo on a
CPU) that :mod:`torch.distributed` runs the collectives on. Nothing here schedules, spawns or
talks to another machine itself: the launcher does that.

Without those variables (a plain ``python -m ladtalk ...``) everything is a world of one and
every helper below is a cheap no-op, so the same code path runs in both cases.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional

import torch

from ladtalk._util.device import resolve_device
from ladtalk.errors import InputError

#: seconds a process waits at a collective for the others (``LADTALK_DIST_TIMEOUT``): a rank
#: that waits while rank 0 detects faces or evaluates, or that finished its share of a batch
#: before the slowest rank, must not give up early
DEFAULT_TIMEOUT_S = 24 * 3600.0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not a whole number; it is set by the launcher "
                         "(torchrun), do not set it by hand") from None


@dataclass(frozen=True)
class DistContext:
    """This process's place among the launched ones (a world of one when not launched)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        """More than one process: collectives are needed."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes shared files and prints the report."""
        return self.rank == 0

    def device(self, requested: Any = None) -> torch.device:
        """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is there (or asked for with
        no index), else the CPU; an explicit ``cuda:K`` or ``cpu`` is kept."""
        dev = resolve_device(requested)
        if dev.type == "cuda" and dev.index is None and self.enabled:
            count = torch.cuda.device_count()
            if self.local_rank >= count:
                raise InputError(f"local rank {self.local_rank} has no GPU: this node has "
                                 f"{count}; start at most {count} processes per node "
                                 f"(torchrun --nproc-per-node {count}) or pass --device cpu")
            dev = torch.device("cuda", self.local_rank)
        return dev

    def to_json(self) -> dict:
        return {"rank": self.rank, "world_size": self.world_size,
                "local_rank": self.local_rank, "local_world_size": self.local_world_size}


def context() -> DistContext:
    """This process's :class:`DistContext`, from the launcher's environment variables."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"RANK={rank} does not fit WORLD_SIZE={world}")
    local = _env_int("LOCAL_RANK", rank if world > 1 else 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    return DistContext(rank, world, local, local_world)


def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init(ctx: Optional[DistContext] = None, device: Optional[torch.device] = None
         ) -> DistContext:
    """Join the process group when launched with more than one process (idempotent).

    NCCL when this rank runs on CUDA, else gloo. The timeout is ``LADTALK_DIST_TIMEOUT``
    seconds (default :data:`DEFAULT_TIMEOUT_S`)."""
    ctx = ctx or context()
    if not ctx.enabled or is_initialized():
        return ctx
    if not torch.distributed.is_available():
        raise InputError("this torch build has no torch.distributed; run one process")
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(var):
            raise InputError(f"WORLD_SIZE={ctx.world_size} but {var} is not set: start the "
                             "processes with torchrun (or accelerate launch), which sets it")
    raw = os.environ.get("LADTALK_DIST_TIMEOUT", "").strip()
    try:
        timeout = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise InputError(f"LADTALK_DIST_TIMEOUT={raw!r} is not a number of seconds > 0")
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(
        backend="nccl" if cuda else "gloo", rank=ctx.rank, world_size=ctx.world_size,
        timeout=datetime.timedelta(seconds=timeout))
    return ctx


def shutdown(barrier: bool = True) -> None:
    """Leave the process group, after a last barrier so no rank leaves while others still
    send. ``barrier=False`` when leaving on an error: the others may wait at another
    collective, and the launcher stops them when this process exits with an error."""
    if is_initialized():
        if barrier:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


@contextmanager
def rank_zero_first(ctx: DistContext) -> Iterator[None]:
    """Run the block on rank 0 first and on the other ranks after it (which then find its
    caches). When rank 0's block fails, the others stop with an :class:`InputError` that
    names rank 0's error, instead of waiting at a collective that never comes."""
    if not (ctx.enabled and is_initialized()):
        yield
        return
    if not ctx.is_main:
        failed = broadcast_object(None)
        if failed:
            raise InputError(f"rank 0 stopped ({failed}); this rank stops too")
        yield
        return
    try:
        yield
    except BaseException as exc:
        broadcast_object(f"{type(exc).__name__}: {exc}")
        raise
    broadcast_object("")


def barrier() -> None:
    if is_initialized():
        torch.distributed.barrier()


def all_gather_object(obj: Any) -> List[Any]:
    """Every rank's ``obj`` (picklable, from our own processes), in rank order."""
    if not is_initialized():
        return [obj]
    out: List[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s values."""
    if is_initialized():
        torch.distributed.broadcast(tensor, src=src)
    return tensor


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Sum (or ``max``) ``tensor`` over all ranks, in place."""
    if is_initialized():
        ops = {"sum": torch.distributed.ReduceOp.SUM, "max": torch.distributed.ReduceOp.MAX}
        torch.distributed.all_reduce(tensor, op=ops[op])
    return tensor


__all__ = ["DEFAULT_TIMEOUT_S", "DistContext", "all_gather_object", "all_reduce_", "barrier",
           "broadcast_", "broadcast_object", "context", "init", "is_initialized",
           "rank_zero_first", "shutdown"]
