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
from torch import nn


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


def broadcast_choice(index: int) -> int:
    """Rank 0's ``index`` on every rank (a setting chosen by a measurement must be the same
    on all ranks, or DDP's collectives would not line up)."""
    if not (dist.is_available() and dist.is_initialized()):
        return int(index)
    t = torch.tensor([int(index)], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src=0)
    return int(t.item())


class GlobalBatchNorm3d(nn.BatchNorm3d):
    """Batch norm whose statistics are taken over the batches of all ranks, for CPU process
    groups (``nn.SyncBatchNorm`` only runs on GPUs). One differentiable all-reduce of the
    per-channel count, sum and sum of squares per call; running statistics as BatchNorm's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.ndim)]
        xf = x.float()
        count = torch.full((1,), x.numel() / x.shape[1], dtype=torch.float32, device=x.device)
        total = all_reduce(torch.cat([count, xf.sum(dims), (xf * xf).sum(dims)]))
        n, c = total[0], x.shape[1]
        mean = total[1:1 + c] / n
        var = (total[1 + c:] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else \
                    1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / max(float(n) - 1, 1.0), m)
        shape = (1, c) + (1,) * (x.ndim - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Batch norm layers of ``module`` made to use the statistics of every rank's batch
    before DDP wraps it: ``nn.SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm3d` on the
    CPU. Without it each rank normalises by its own small batch. The state dict is unchanged."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm3d:
            child.__class__ = GlobalBatchNorm3d  # same parameters and buffers
        else:
            sync_batchnorm(child, device)
    return module


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
