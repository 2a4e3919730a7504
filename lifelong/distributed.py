"""Several processes training one run (`accelerate launch -m lifelong.cli run CONFIG`, or `torchrun`):
this process's rank and the world size, read from the launcher's environment, and the few collectives
the loop and the methods use. On one process every function is the identity, so nothing changes.

    rank(), world()            # 0, 1 without a launcher
    broadcast(obj)             # rank 0's object on every rank
    gather(obj)                # [rank 0's, rank 1's, ...] on every rank
    all_sum([tensors])         # summed over the ranks, in place

The process group itself is joined by Accelerate (`PartialState`); docs/distributed.md says how each
method runs under DistributedDataParallel.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from lifelong.errors import UserError

T = TypeVar("T")


def rank() -> int:
    """This process's global rank (RANK, set by torchrun and accelerate launch); 0 without a launcher."""
    return int(os.environ.get("RANK", "0"))


def world() -> int:
    """How many processes train the run (WORLD_SIZE); 1 without a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def joined() -> bool:
    """Whether several processes run and their group is up (collectives can be called)."""
    return world() > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def on_cpu() -> bool:
    """Whether the processes train on the CPU (gloo), which Accelerate must be told when `torchrun`
    launched them (`accelerate launch --cpu` tells it itself): a launcher on a machine without a GPU."""
    return world() > 1 and not torch.accelerator.is_available()


def join() -> None:
    """Join the launcher's process group (a no-op without a launcher, or once joined)."""
    if world() > 1:
        from accelerate import PartialState

        PartialState(cpu=on_cpu())


def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every rank (pickled over the process group, never written to disk)."""
    if not joined():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not joined():
        return [obj]
    out: list[Any] = [None] * world()
    torch.distributed.all_gather_object(out, obj)
    return out


def all_sum(tensors: list[torch.Tensor]) -> None:
    """Sum each tensor over the ranks, in place (the same values on every rank afterwards)."""
    if not joined():
        return
    for t in tensors:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)


def share(n: int, index: int | None = None, size: int | None = None) -> int:
    """This rank's share of `n` rows split over the ranks: the shares differ by at most one and sum to
    `n` (the lower ranks take the odd rows), so a global count such as the replay rows per step stays
    what one process uses."""
    index, size = rank() if index is None else index, world() if size is None else size
    return n // size + (index < n % size)


def barrier() -> None:
    if joined():
        torch.distributed.barrier()


def on_main(fn: Callable[[], T]) -> T:
    """`fn()` on rank 0 alone, its result sent to every rank. A UserError it raises is raised on every
    rank (the others would otherwise wait for rank 0 forever)."""
    if not joined():
        return fn()
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except UserError as err:
            error = str(err)
    result, error = broadcast((result, error))
    if error is not None:
        raise UserError(error)
    return result


def any_rank(flag: torch.Tensor) -> bool:
    """Whether the boolean scalar `flag` is true on any rank (every rank gets the same answer)."""
    count = flag.float()
    all_sum([count])
    return bool(count > 0)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value's mean over the ranks that have it (a rank with no replay rows this step has no
    replay term), on every rank."""
    if not joined():
        return values
    every = gather(values)
    names = dict.fromkeys(name for part in every for name in part)
    return {n: sum(p[n] for p in every if n in p) / sum(n in p for p in every) for n in names}
