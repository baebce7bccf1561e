"""3D SPADE generator: label map -> image with spatially-adaptive normalization.

Park, Liu, Wang & Zhu, "Semantic Image Synthesis with Spatially-Adaptive
Normalization", CVPR 2019 (arXiv:1903.07291), in 3D. A plain normalization
layer applied to a one-hot label map erases it: a uniform region becomes zero,
so the network cannot tell white matter from air (section 3 of the paper).
SPADE instead normalizes the *features* and then modulates them, voxel by
voxel, with a scale and a shift computed from the label map resized to each
layer's grid, so the labels reach every layer of the generator.

This generator also starts from the classical answer: its output is the
per-class mean intensity image (a lookup table fitted on the training pairs by
:meth:`SPADEGenerator3D.fit_to_data`, stored as a buffer with the weights)
plus a learned correction whose last layer starts at zero. An untrained
network therefore *equals* the lookup baseline it is judged against, and
training can only add what the lookup cannot express: partial-volume
transitions, intensity gradients within a tissue, texture.

Tensors are ``(B, C, D, H, W)``; the label map arrives one-hot ``(B, K, D, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_medgan.models.checks import check_input

__all__ = ["SPADE3d", "SPADEResBlock3d", "SPADEGenerator3D"]


class SPADE3d(nn.Module):
    """Parameter-free batch norm, modulated per voxel by the label map (Park et al. 2019, eq. 1).

    Batch norm as in the paper (there synchronised), not instance norm: instance
    statistics depend on what a patch happens to contain, so a model applied by
    sliding windows would correct each window differently; batch norm's running
    statistics (used by the EMA generator at inference) are the same everywhere.

    Parameters
    ----------
    channels : int
        Feature channels normalized and modulated.
    label_channels : int
        One-hot label channels ``K``.
    hidden : int
        Width of the shared convolution that embeds the label map.
    """

    def __init__(self, channels: int, label_channels: int, hidden: int = 16) -> None:
        super().__init__()
        self.norm = nn.BatchNorm3d(channels, affine=False)  # statistics, not content, per patch
        self.shared = nn.Sequential(nn.Conv3d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv3d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv3d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.shape[2:] != x.shape[2:]:
            # area-average keeps soft class fractions at coarse grids (nearest would drop thin
            # structures such as the skull)
            labels = F.adaptive_avg_pool3d(labels, x.shape[2:])
        h = self.shared(labels)
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


class SPADEResBlock3d(nn.Module):
    """SPADE residual block (Park et al. 2019, fig. 4): two SPADE-ReLU-conv stages and a
    learned shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, label_channels: int) -> None:
        super().__init__()
        mid = min(in_channels, out_channels)
        self.norm1 = SPADE3d(in_channels, label_channels)
        self.conv1 = nn.Conv3d(in_channels, mid, 3, padding=1)
        self.norm2 = SPADE3d(mid, label_channels)
        self.conv2 = nn.Conv3d(mid, out_channels, 3, padding=1)
        self.shortcut = None
        if in_channels != out_channels:
            self.norm_s = SPADE3d(in_channels, label_channels)
            self.shortcut = nn.Conv3d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        act = nn.functional.leaky_relu
        s = x if self.shortcut is None else self.shortcut(self.norm_s(x, labels))
        h = self.conv1(act(self.norm1(x, labels), 0.2))
        h = self.conv2(act(self.norm2(h, labels), 0.2))
        return s + h


class SPADEGenerator3D(nn.Module):
    """Label map -> image: lookup image + a SPADE decoder's correction.

    The decoder starts from the label map area-averaged to ``1 / 2**levels`` of
    the patch side, and each level is a :class:`SPADEResBlock3d` followed by a
    trilinear x2 upsampling; widths halve from ``channels * 2**levels`` to
    ``channels`` at full resolution. A 1x1x1 head (zero-initialised) maps the
    features to the intensity correction.

    Parameters
    ----------
    in_channels : int
        One-hot label channels ``K`` (>= 2).
    out_channels : int
        Image channels, 1.
    channels : int
        Width at full resolution.
    levels : int
        Number of x2 upsamplings (the input side must be divisible by ``2**levels``).

    Input ``(B, K, D, H, W)`` one-hot -> output ``(B, 1, D, H, W)`` in normalised units.
    """

    def __init__(self, in_channels: int, out_channels: int = 1, channels: int = 32,
                 levels: int = 2) -> None:
        super().__init__()
        if int(in_channels) < 2:
            raise ValueError(f"in_channels: expected >= 2 label channels, got {in_channels!r}")
        if out_channels != 1:
            raise ValueError(f"out_channels: expected 1, got {out_channels!r}")
        if int(levels) < 1:
            raise ValueError(f"levels: expected >= 1, got {levels!r}")
        self.in_channels, self.out_channels = int(in_channels), 1
        self.levels = int(levels)
        self.size_multiple = 2 ** self.levels
        k = self.in_channels
        widths = [int(channels) * 2 ** (self.levels - i) for i in range(self.levels + 1)]
        self.stem = nn.Conv3d(k, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList(
            SPADEResBlock3d(widths[i], widths[i + 1], k) for i in range(self.levels))
        self.final = SPADEResBlock3d(widths[-1], widths[-1], k)
        self.head = nn.Conv3d(widths[-1], 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # per-class mean intensity (normalised units): the lookup the output starts from
        self.register_buffer("class_means", torch.zeros(k))

    def lookup(self, labels: torch.Tensor) -> torch.Tensor:
        """Per-class mean image ``(B, 1, D, H, W)`` of a (soft) one-hot label map."""
        return torch.einsum("bkdhw,k->bdhw", labels, self.class_means.to(labels.dtype))[:, None]

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        check_input(labels, self.in_channels, self.size_multiple, "SPADEGenerator3D")
        coarse = [s // self.size_multiple for s in labels.shape[2:]]
        h = self.stem(F.adaptive_avg_pool3d(labels, coarse))
        for block in self.blocks:
            h = block(h, labels)
            h = F.interpolate(h, scale_factor=2, mode="trilinear", align_corners=False)
        h = self.final(h, labels)
        delta = self.head(nn.functional.leaky_relu(h, 0.2))
        return self.lookup(labels) + delta.to(labels.dtype)

    @torch.no_grad()
    def fit_to_data(self, data) -> None:
        """Set the lookup table from training data: mean normalised intensity of each class.

        ``data`` is a :class:`napari_medgan.data.datasets.TrainingData` with
        ``volumes`` and ``label_arrays``; a class absent from the data gets the
        overall mean.
        """
        from napari_medgan.baselines import fit_class_means

        means = fit_class_means(data.volumes, data.label_arrays, self.in_channels)
        self.class_means.copy_(torch.as_tensor(means, dtype=self.class_means.dtype))
