"""Several processes (``torchrun``) as one: each takes its shard of a list, and the shards' outputs
come back to rank 0 in the order one process would have produced them.

Sharding is a fixed rule, item ``i`` to rank ``i % world``, so a rank's shard keeps the list's
order; gathering sorts by the caller's key (the item's place in the full list), which restores
exactly the order of one process. Without ``torchrun`` every function here is the identity.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .devices import resolve_device

T = TypeVar("T")


def init_distributed(device: str | None = None) -> tuple[int, int, torch.device]:
    """(rank, world size, device): one process on ``device``, or this rank's under ``torchrun``
    (``RANK`` set): the GPU of its local rank with NCCL, else the CPU with gloo."""
    if "RANK" not in os.environ:
        return 0, 1, resolve_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=_timeout())
    return dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local_rank}" if cuda else "cpu")


def _timeout() -> timedelta:
    """How long a rank waits for the others in any collective: 30 minutes, or
    ``EFFICIENTDET_DIST_TIMEOUT`` seconds. Evaluation and prediction gather once, at the end, so
    the slowest shard must finish within it; shards of very uneven cost (long videos) need more."""
    text = os.environ.get("EFFICIENTDET_DIST_TIMEOUT", "1800")
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"EFFICIENTDET_DIST_TIMEOUT must be a positive number of seconds, got {text!r}")
    return timedelta(seconds=seconds)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes: (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Rank ``rank``'s items: every ``world``-th from the ``rank``-th, in order."""
    return list(items[rank::world])


def gather_sorted(items: list[T], key: Callable[[T], Any]) -> list[T] | None:
    """Every rank's ``items``, merged on rank 0 in the order of ``key`` (stable); None elsewhere."""
    rank, world = rank_and_world()
    if world == 1:
        return items
    parts: list[list[T]] | None = [[] for _ in range(world)] if rank == 0 else None
    dist.gather_object(items, parts, dst=0)
    return sorted((x for part in parts for x in part), key=key) if rank == 0 else None


def all_gather_sorted(items: list[T], key: Callable[[T], Any]) -> list[T]:
    """Every rank's ``items``, merged on every rank in the order of ``key`` (stable)."""
    _, world = rank_and_world()
    if world == 1:
        return items
    parts: list[list[T]] = [[] for _ in range(world)]
    dist.all_gather_object(parts, items)
    return sorted((x for part in parts for x in part), key=key)


def broadcast_from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank (pickled: for small objects such as metrics)."""
    _, world = rank_and_world()
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def broadcast_state(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers into ``module`` on every rank, so that all ranks run one model."""
    _, world = rank_and_world()
    if world == 1:
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)
