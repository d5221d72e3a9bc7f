"""torchrun support: one process per device, DistributedDataParallel over gloo (CPU) or NCCL (GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vitkit.inference.runtime import pick_device


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this machine

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def nodes(self) -> int:
        return max(1, self.world_size // self.local_world_size)

    @property
    def node(self) -> int:
        return self.rank // self.local_world_size  # torchrun numbers the ranks of a machine consecutively


def setup(requested_device: str) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when started by torchrun (WORLD_SIZE > 1); a no-op otherwise."""
    info = DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", 1))),
    )
    device = pick_device(requested_device, info.local_rank)
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    """This process's rank under torchrun (0 alone), known before the process group starts."""
    return int(os.environ.get("RANK", 0))
