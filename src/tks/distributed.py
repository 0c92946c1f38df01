"""Multi-process training with ``torchrun``: process-group setup and the few collectives the loop needs.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; a plain ``tks train`` has none and runs as a single
process (``Dist.single()``), where every helper here is a no-op. NCCL is used on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def single(cls) -> Dist:
        """A job of one process."""
        return cls()

    @property
    def enabled(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that prints, logs and writes files."""
        return self.rank == 0


def _rank() -> int:
    """This process's rank as ``torchrun`` sets it (``RANK``; 0 when run alone): the one place that reads it."""
    return int(os.environ.get("RANK", "0"))


def is_main_from_env() -> bool:
    """Whether this process will be rank 0 (or runs alone), known from the environment before joining the group."""
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _rank() == 0


def init_from_env(device: str) -> Dist:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Args:
        device: the configured device (``auto``, ``cpu``, ``cuda``): CUDA uses NCCL and one GPU per local rank.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist.single()
    rank, local_rank = _rank(), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank=rank, local_rank=local_rank, world_size=world_size)


def all_reduce_sum(values: dict[str, Tensor], info: Dist) -> dict[str, Tensor]:
    """Sum each tensor over all processes (in place; returns the same dict)."""
    if info.enabled:
        for value in values.values():
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return values


def all_gather_objects(obj: Any, info: Dist) -> list[Any]:
    """Every process's ``obj``, in rank order (a list of one object when not distributed)."""
    if not info.enabled:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def shutdown(info: Dist) -> None:
    """Leave the process group."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
