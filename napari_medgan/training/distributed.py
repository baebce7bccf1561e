"""Multi-process training under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node=K -m napari_medgan train ...`` sets ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`init_distributed` reads them and
joins the process group (NCCL when every rank has its own GPU, gloo on CPU).
Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group if launched by torchrun; a no-op otherwise.

    The backend is NCCL when CUDA is used, gloo otherwise. With CUDA each
    process takes the GPU of its ``LOCAL_RANK``.
    """
    if not launched_by_torchrun():
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    world_size = int(os.environ["WORLD_SIZE"])
    use_cuda = torch.cuda.is_available() and not device.startswith(("cpu", "mps"))
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size)


def current_info() -> DistInfo:
    """Rank and world size of an already initialised group (or the single-process default)."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return DistInfo(rank, int(os.environ.get("LOCAL_RANK", rank)), dist.get_world_size())
    return DistInfo()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_ranks_agree(flag: bool) -> bool:
    """True only if ``flag`` is true on every rank (used for 'is the loss finite?')."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
