"""Exponential moving average of generator weights (Karras et al. 2018, "Progressive Growing of GANs").

Samples are drawn from the EMA copy: it is smoother and usually better than
the raw generator, at no training cost.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def unwrap(module: nn.Module) -> nn.Module:
    """The network inside DataParallel/DDP (``.module``) or ``torch.compile`` (``_orig_mod``)."""
    while True:
        inner = getattr(module, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            module = inner
        elif isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            module = module.module
        else:
            return module


def make_ema(generator: nn.Module) -> nn.Module:
    ema = copy.deepcopy(unwrap(generator)).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, generator: nn.Module, decay: float, step: int) -> None:
    """``ema = decay * ema + (1 - decay) * generator``, with a warm-up so early samples are not stale."""
    decay = min(decay, (1.0 + step) / (10.0 + step))
    src = unwrap(generator)
    # one fused kernel per dtype instead of one per tensor (hundreds of launches on a GPU)
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in src.parameters()],
                         1.0 - decay)
    for b_ema, b in zip(ema.buffers(), src.buffers()):
        b_ema.copy_(b)
