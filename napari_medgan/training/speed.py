"""What makes the training step faster or smaller on a device, applied to the trainer's own
networks: memory format, gradient checkpointing, and the timing used to choose between them.

The trainer decides ``train.memory_format`` and ``train.compile`` set to ``auto`` by timing
its real step (:meth:`napari_medgan.training.trainer.Trainer._choose_speed`); this module
holds the pieces that do not need the trainer.
"""

from __future__ import annotations

import statistics
import time
import types
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _checkpointed_forward(self: nn.Module, *args, **kwargs):
    forward = type(self).forward
    if torch.is_grad_enabled():
        return checkpoint(forward, self, *args, use_reentrant=False, **kwargs)
    return forward(self, *args, **kwargs)


def enable_grad_checkpointing(module: nn.Module) -> int:
    """Make every convolution block of ``module`` (an ``nn.Sequential`` that holds a
    ``Conv3d`` directly) recompute its activations in the backward pass instead of keeping
    them: activation memory falls to about the block inputs, for roughly one more forward.

    The weights, state dict and outputs are unchanged, and a deep copy (the EMA generator)
    keeps the behaviour bound to itself. Batch norm layers inside a block see each batch
    twice, so their running statistics move about twice as fast. Returns the number of
    blocks changed."""
    count = 0
    for block in module.modules():
        if (isinstance(block, nn.Sequential) and "forward" not in block.__dict__
                and any(isinstance(c, nn.Conv3d) for c in block.children())):
            # a bound method: deepcopy re-binds it to the copy (copy._deepcopy_method)
            block.forward = types.MethodType(_checkpointed_forward, block)
            count += 1
    return count


def memory_format(name: str) -> torch.memory_format:
    """``torch.channels_last_3d`` for ``"channels_last"``, else the default layout."""
    return torch.channels_last_3d if name == "channels_last" else torch.contiguous_format


def time_steps(step: Callable[[], object], device: torch.device, warmup: int = 2,
               repeat: int = 4) -> tuple[float, float]:
    """``(seconds of the first call, median seconds of the next `repeat`)`` for ``step``,
    synchronising the device around each call. The first call carries one-off costs
    (``torch.compile``, cuDNN's algorithm search), the median the steady state."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    for _ in range(max(1, warmup) + repeat):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times[0], statistics.median(times[max(1, warmup):])
