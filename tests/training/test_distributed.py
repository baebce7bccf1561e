"""Process-group helpers, run in two real gloo processes on the CPU."""

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from napari_medgan.training.distributed import GlobalBatchNorm3d, broadcast_choice, sync_batchnorm


def _worker(rank: int, init_file: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        full = torch.randn(4, 3, 4, 4, 4) * 3 + 1
        net = sync_batchnorm(nn.Sequential(nn.BatchNorm3d(3)), torch.device("cpu"))
        mine = full[2 * rank: 2 * rank + 2].clone().requires_grad_(True)
        out = net(mine)
        (out * torch.arange(out.numel()).view_as(out)).sum().backward()
        results[rank] = {"out": out.detach(), "grad": mine.grad, "mean": net[0].running_mean,
                         "var": net[0].running_var, "type": type(net[0]).__name__,
                         "choice": broadcast_choice(rank + 5)}
    finally:
        dist.destroy_process_group()


def test_global_batchnorm_equals_batchnorm_over_all_ranks_batches():
    with tempfile.TemporaryDirectory() as tmp:
        results = mp.Manager().dict()
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), results), nprocs=2, join=True)
        results = dict(results)
    torch.manual_seed(0)
    full = (torch.randn(4, 3, 4, 4, 4) * 3 + 1).requires_grad_(True)
    bn = nn.BatchNorm3d(3)
    out = bn(full)
    (out * torch.cat([torch.arange(out.numel() // 2).view(2, 3, 4, 4, 4)] * 2)).sum().backward()
    for rank in (0, 1):
        got = results[rank]
        assert got["type"] == GlobalBatchNorm3d.__name__ and got["choice"] == 5  # rank 0's
        torch.testing.assert_close(got["out"], out[2 * rank: 2 * rank + 2].detach(),
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got["grad"], full.grad[2 * rank: 2 * rank + 2],
                                   rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(got["mean"], bn.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["var"], bn.running_var, rtol=1e-4, atol=1e-5)
