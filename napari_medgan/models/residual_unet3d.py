"""3D residual U-Net for restoration and translation: a learned correction to a classical estimate.

Super-resolution, denoising, inpainting and modality translation all have an
output that is close to something computable without learning: the
tricubic-upsampled low-resolution image, the noisy image itself, the masked
image with its hole filled smoothly, or the source image passed through a
monotone intensity mapping. The generator predicts a *correction* to that
estimate (Kim, Lee & Lee, "Accurate Image Super-Resolution Using Very Deep
Convolutional Networks", CVPR 2016; Zhang et al., "Beyond a Gaussian Denoiser:
Residual Learning of Deep CNN for Image Denoising", IEEE TIP 2017), and its last
layer starts at zero, so an untrained network already equals the estimate and
training can only improve on it. The result is raised to the darkest intensity of
the clean training targets, in training (gradient passed straight through) as when
evaluated (:class:`~napari_medgan.models.blocks.IntensityFloor`).

The U-Net is MONAI's :class:`monai.networks.nets.UNet` with residual units and
*no normalization layers*: instance or batch norm would remove the absolute
intensity of the input that the correction depends on.

``base`` says what the correction is added to:

================ ==================== ==========================================
base             input channels       estimate
================ ==================== ==========================================
``identity``     1                    the input (superres: already upsampled)
``inpaint``      2 (image, mask)      the image with its hole already filled by
                                      the biharmonic continuation (the data
                                      pipeline does it, see ``data.datasets``);
                                      known voxels are returned exactly
``intensity_map`` 1                   the input through a monotone piecewise-linear
                                      map fitted on the training pairs (quantile
                                      matching, as histogram matching does)
================ ==================== ==========================================

Tensors are ``(B, C, D, H, W)`` in normalised intensity units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_medgan.models.blocks import IntensityFloor
from napari_medgan.models.checks import check_input

__all__ = ["ResidualUNet3D", "apply_intensity_map", "BASES"]

BASES = ("identity", "inpaint", "intensity_map")
_LEAKY = ("LEAKYRELU", {"negative_slope": 0.2})
_MAP_POINTS = 65


class ResidualUNet3D(nn.Module):
    """U-Net that predicts a correction to a classical estimate (see the module table).

    Parameters
    ----------
    in_channels : int
        Input channels: 1, or 2 for ``base="inpaint"`` (hole-filled image, mask).
    out_channels : int
        1.
    channels : int
        Width ``c`` of the first level; the levels are ``(c, 2c, 4c)`` with two
        stride-2 stages, so spatial sizes must be divisible by 4.
    num_res_units : int
        Residual units per level (MONAI).
    base : str
        ``"identity"``, ``"inpaint"`` or ``"intensity_map"``.

    Input ``(B, in_channels, D, H, W)`` -> output ``(B, 1, D, H, W)``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, channels: int = 32,
                 num_res_units: int = 1, base: str = "identity") -> None:
        super().__init__()
        from monai.networks.nets import UNet

        if base not in BASES:
            raise ValueError(f"base: expected one of {BASES}, got {base!r}")
        expected = 2 if base == "inpaint" else 1
        if int(in_channels) != expected:
            raise ValueError(f"in_channels: base {base!r} takes {expected} channel(s), got "
                             f"{in_channels!r}")
        if out_channels != 1:
            raise ValueError(f"out_channels: expected 1, got {out_channels!r}")
        if int(channels) < 1:
            raise ValueError(f"channels: expected >= 1, got {channels!r}")
        self.in_channels, self.out_channels, self.base = int(in_channels), 1, base
        strides = (2, 2)
        self.size_multiple = 2 ** len(strides)
        c = int(channels)
        self.net = UNet(spatial_dims=3, in_channels=self.in_channels, out_channels=c,
                        channels=(c, 2 * c, 4 * c), strides=strides,
                        num_res_units=int(num_res_units), act=_LEAKY, norm=None)
        self.head = nn.Conv3d(c, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # monotone intensity map (normalised units): identity until fit_to_data
        grid = torch.linspace(-1.0, 1.0, _MAP_POINTS)
        self.register_buffer("map_x", grid.clone())
        self.register_buffer("map_y", grid.clone())
        self.floor = IntensityFloor()  # fitted by fit_to_data

    def estimate(self, x: torch.Tensor) -> torch.Tensor:
        """The classical estimate the correction is added to, ``(B, 1, D, H, W)``."""
        if self.base == "intensity_map":
            return apply_intensity_map(x[:, :1], self.map_x, self.map_y)
        return x[:, :1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.size_multiple, "ResidualUNet3D")
        base = self.estimate(x.float())
        delta = self.head(F.leaky_relu(self.net(x), 0.2)).float()
        if self.base == "inpaint":
            missing = x[:, 1:2] > 0
            return torch.where(missing, self.floor(base + delta), x[:, :1].float())
        return self.floor(base + delta)

    @torch.no_grad()
    def fit_to_data(self, data) -> None:
        """Fit the output floor on the training targets and, for ``base="intensity_map"``,
        the monotone intensity map on the training pairs: matched quantiles of the sources
        and of the targets, as histogram matching does. ``data`` is a
        :class:`napari_medgan.data.datasets.TrainingData`."""
        self.floor.fit(data.volumes)
        if self.base != "intensity_map":
            return
        q = torch.linspace(0, 1, _MAP_POINTS, dtype=torch.float64).numpy()
        sources, targets = data.condition_volumes, data.volumes
        import numpy as np

        src = np.concatenate([np.asarray(v, np.float64).ravel() for v in sources])
        tgt = np.concatenate([np.asarray(v, np.float64).ravel() for v in targets])
        xs, ys = np.quantile(src, q), np.quantile(tgt, q)
        xs = np.maximum.accumulate(xs + np.arange(xs.size) * 1e-7)  # strictly increasing knots
        self.map_x.copy_(torch.as_tensor(xs, dtype=self.map_x.dtype))
        self.map_y.copy_(torch.as_tensor(ys, dtype=self.map_y.dtype))


def apply_intensity_map(x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear monotone map through the knots ``(xs, ys)``, constant beyond them."""
    xs, ys = xs.to(x.dtype), ys.to(x.dtype)
    flat = x.reshape(-1).clamp(xs[0], xs[-1])
    idx = torch.searchsorted(xs, flat.contiguous()).clamp(1, xs.numel() - 1)
    x0, x1, y0, y1 = xs[idx - 1], xs[idx], ys[idx - 1], ys[idx]
    t = ((flat - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    return (y0 + t * (y1 - y0)).reshape(x.shape)
