"""Building blocks shared by the model families.

:class:`UpsampleConv3d` is the generators' upsampling step: 2x nearest-neighbour
upsampling followed by a 3^3 convolution (padding 1), the resize-convolution that avoids
the checkerboard artefacts of learned transposed convolutions (Odena, Dumoulin & Olah,
"Deconvolution and Checkerboard Artifacts", Distill 2016). Both are linear, so together
they are one stride-2 transposed convolution whose 4^3 kernel is made from the 3^3 one:
per axis, an output voxel at an even position ``2i`` sees ``w[0]`` at ``x[i-1]`` and
``w[1] + w[2]`` at ``x[i]``; at an odd position ``2i+1``, ``w[0] + w[1]`` at ``x[i]`` and
``w[2]`` at ``x[i+1]``. Computed that way, the output is the same (to rounding) with 8
instead of 27 multiply-adds per output voxel and channel pair, and the 8x larger upsampled
tensor is never made: on an H200 the step of a 128^3 generator was dominated by that tensor
(its copies between memory layouts took a third of the step).

The learned parameter stays the 3^3 kernel of an ordinary ``nn.Conv3d`` (same shape, same
initialisation, same state-dict entries), so weights move between the two forms freely.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations
from torch.overrides import TorchFunctionMode

__all__ = ["IntensityFloor", "UpsampleConv3d", "on_meta_device", "resize_kernel",
           "spectral_norm", "upsample_block"]

_shapes_only = threading.local()


class _NoRandomValuesOnMeta(TorchFunctionMode):
    """Meta tensors hold no values, so drawing random ones into them is a no-op; torch does
    it through its Python references, whose first use imports ``torch._dynamo``."""

    SKIPPED = (torch.Tensor.normal_, nn.init.normal_, nn.init.trunc_normal_,
               nn.init.kaiming_normal_, nn.init.xavier_normal_)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.SKIPPED:
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


@contextlib.contextmanager
def on_meta_device():
    """Networks built inside have shapes but no memory (the meta device): for counting
    parameters and checking a checkpoint's sizes before anything is allocated.

    Random initialisers are skipped and :func:`spectral_norm` is left out there: it adds no
    parameters (the weight becomes ``parametrizations.weight.original``, plus two vectors),
    and torch runs its power iteration and shape check on meta tensors through Python
    references whose first use imports ``torch._dynamo``, about a second and a thousand
    modules whose import holds the GIL for 100-170 ms at a time against napari's GUI thread
    while a run sets up."""
    before = getattr(_shapes_only, "active", False)
    _shapes_only.active = True
    try:
        with torch.device("meta"), _NoRandomValuesOnMeta():
            yield
    finally:
        _shapes_only.active = before


def spectral_norm(module: nn.Module) -> nn.Module:
    """``module`` with spectral normalisation of its weight (Miyato et al., ICLR 2018;
    torch's parametrization), except in networks built by :func:`on_meta_device`."""
    if getattr(_shapes_only, "active", False):
        return module
    return parametrizations.spectral_norm(module)


def _expand_axis(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Taps ``(w0, w1, w2)`` along ``dim`` -> the transposed kernel's
    ``(w2, w1 + w2, w0 + w1, w0)`` (see the module docstring)."""
    w0, w1, w2 = w.unbind(dim)
    return torch.stack((w2, w1 + w2, w0 + w1, w0), dim)


def resize_kernel(weight: torch.Tensor) -> torch.Tensor:
    """A ``(C_out, C_in, 3, 3, 3)`` convolution kernel -> the ``(C_in, C_out, 4, 4, 4)``
    kernel of ``conv_transpose3d(x, ., stride=2, padding=1)`` that equals nearest 2x
    upsampling followed by the convolution (padding 1). Sums only, in the weight's own
    dtype (float32 under autocast: no rounding to bf16 before the taps are added)."""
    if weight.ndim != 5 or tuple(weight.shape[2:]) != (3, 3, 3):
        raise ValueError(f"resize_kernel: expected a (C_out, C_in, 3, 3, 3) kernel, "
                         f"got {tuple(weight.shape)}")
    for dim in (2, 3, 4):
        weight = _expand_axis(weight, dim)
    return weight.transpose(0, 1)


class UpsampleConv3d(nn.Conv3d):
    """``Conv3d(in_channels, out_channels, 3, padding=1)`` applied after 2x nearest
    upsampling, computed as one transposed convolution (see the module docstring).

    Input ``(B, C_in, D, H, W)`` -> output ``(B, C_out, 2D, 2H, 2W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = resize_kernel(self.weight)
        if x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
            kernel = kernel.contiguous(memory_format=torch.channels_last_3d)
        else:
            kernel = kernel.contiguous()
        return F.conv_transpose3d(x, kernel, self.bias, stride=2, padding=1)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", after 2x nearest upsampling"


def upsample_block(in_channels: int, out_channels: int, norm: nn.Module,
                   bias: bool = False) -> nn.Sequential:
    """[2x nearest upsampling, 3^3 conv, ``norm``, ReLU] as one :class:`UpsampleConv3d`, the
    norm and a ReLU. The children are named ``1``, ``2``, ``3``: the state-dict keys of the
    same block written with a separate ``nn.Upsample`` at index 0, so checkpoints from
    before the fusion load unchanged."""
    return nn.Sequential(OrderedDict((("1", UpsampleConv3d(in_channels, out_channels, bias)),
                                      ("2", norm), ("3", nn.ReLU(inplace=True)))))


class IntensityFloor(nn.Module):
    """The darkest intensity of the clean training targets (normalised units), to which a
    generator's output is raised: nothing in the data is darker than its floor
    (magnitude MR is never negative, CT air is -1000 HU, a skull-stripped or zero-padded
    background is one constant), so what a conditional generator leaves below it (residual
    noise in the air, ringing at an edge) is error. Training sees the same floored output
    (so the loss and the discriminator judge what evaluation will return, and a voxel of
    the floor's own intensity is right once its prediction is anywhere at or below it), with
    the gradient passed straight through (so a voxel wrongly below the floor is still pulled
    up). Unfitted (a checkpoint from before it), the floor is the lowest float32 (finite, as
    checkpoints require): no change.

    Input ``(B, C, D, H, W)`` -> the same shape.
    """

    #: checkpoints from before the floor lack it and load unfloored
    OPTIONAL_STATE = ("value",)

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("value", torch.tensor(torch.finfo(torch.float32).min))

    @torch.no_grad()
    def fit(self, volumes) -> None:
        """The floor from the normalised training targets (arrays or tensors)."""
        self.value.fill_(min(float(torch.as_tensor(v).min()) for v in volumes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        floored = torch.maximum(x, self.value.to(x.dtype))
        return x + (floored - x).detach() if self.training else floored
