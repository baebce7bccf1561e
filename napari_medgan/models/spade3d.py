"""3D SPADE generator: label map -> image with spatially-adaptive normalization.

Park, Liu, Wang & Zhu, "Semantic Image Synthesis with Spatially-Adaptive
Normalization", CVPR 2019 (arXiv:1903.07291), in 3D. A plain normalization
layer applied to a one-hot label map erases it: a uniform region becomes zero,
so the network cannot tell white matter from air (section 3 of the paper).
SPADE instead normalizes the *features* and then modulates them, voxel by
voxel, with a scale and a shift computed from the label map resized to each
layer's grid, so the labels reach every layer of the generator.

This generator also starts from a classical answer, fitted on the training
pairs by :meth:`SPADEGenerator3D.fit_to_data` and stored as buffers with the
weights: the per-class mean intensity (the lookup baseline it is judged
against) plus, within each class, a linear function of the class fractions
around the voxel at three scales (Gaussian-weighted, sigma 0.7, 1.5 and 3
voxels; ridge regression, one per class). That context term expresses what a
lookup cannot and a radiologist sees at once: grey matter next to CSF is
darker than grey matter next to white matter (partial volume), a thin
structure is paler than a thick one. On the two real volumes of
``benchmarks/quality.py`` it alone lifts the lookup's SSIM on the held-out
half from 0.778 to 0.832 (T1) and from 0.951 to 0.978 (MNI152). A learned correction, whose last layer
starts at zero, is added to that estimate, so an untrained network equals it
and training only adds what it cannot express: texture, longer-range shape.
The result is raised to the darkest intensity of the training images, in training
(gradient passed straight through) as when evaluated
(:class:`~napari_medgan.models.blocks.IntensityFloor`).
Checkpoints saved before the context term existed load with it at zero: the
lookup they were trained from.

Tensors are ``(B, C, D, H, W)``; the label map arrives one-hot ``(B, K, D, H, W)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from napari_medgan.models.blocks import IntensityFloor
from napari_medgan.models.checks import check_input

__all__ = ["SPADE3d", "SPADEResBlock3d", "SPADEGenerator3D", "CONTEXT_SIGMAS", "class_context",
           "fit_context"]

#: Gaussian widths (voxels) of the class-fraction context the estimate regresses on
CONTEXT_SIGMAS = (0.7, 1.5, 3.0)
_CONTEXT_RADIUS = 9  # 3 sigma of the widest
#: voxels per class the context regression is fitted on (a random sample; exact below it)
_CONTEXT_SAMPLES = 50_000
_CONTEXT_RIDGE = 1e-4  # ridge penalty per sample: the fractions sum to 1, so they are collinear


def _context_kernels() -> torch.Tensor:
    """``(S, 2 r + 1)`` normalised 1D Gaussians of :data:`CONTEXT_SIGMAS`, each cut at
    ``3 sigma`` (scipy's ``gaussian_filter(truncate=3)``) and zero-padded to one length."""
    rows = []  # plain Python: tensor ops here would import torch._dynamo on the meta device
    for sigma in CONTEXT_SIGMAS:
        cut = int(3 * sigma + 0.5)
        k = [math.exp(-0.5 * (x / sigma) ** 2) if abs(x) <= cut else 0.0
             for x in range(-_CONTEXT_RADIUS, _CONTEXT_RADIUS + 1)]
        rows.append([v / sum(k) for v in k])
    return torch.tensor(rows, dtype=torch.float32)


def _smoothing_matrices(n: int, kernels: torch.Tensor) -> torch.Tensor:
    """``(S, n, n)``: row ``i`` of matrix ``s`` weighs the ``n`` voxels of a line for output
    voxel ``i`` with kernel ``s``, the line's ends replicated outwards (taps that fall beyond
    an end add to the end voxel)."""
    r = (kernels.shape[1] - 1) // 2
    cols = (torch.arange(n, device=kernels.device)[:, None]
            + torch.arange(-r, r + 1, device=kernels.device)[None, :]).clamp(0, n - 1)
    out = torch.zeros(kernels.shape[0], n, n, dtype=kernels.dtype, device=kernels.device)
    return out.scatter_add_(2, cols.expand(kernels.shape[0], n, -1),
                            kernels[:, None, :].expand(-1, n, -1).contiguous())


def class_context(labels: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Gaussian-weighted class fractions around each voxel, ``(B, S*K, D, H, W)`` (channel
    ``s*K + k``: class ``k`` at width ``s``) of a one-hot ``(B, K, D, H, W)`` map, the border
    replicated (a patch's edge continues outwards as it is): ``scipy.ndimage.gaussian_filter``
    with ``mode="nearest", truncate=3`` per channel. Separable, each axis one batched matrix
    product with a banded ``(n, n)`` matrix: on this project's 2-core CPU a depthwise
    convolution took 3.6x as long for four 16^3 crops of 8 classes and 12x at 64^3."""
    b, k, d, h, w = labels.shape
    s = kernels.shape[0]
    taps = kernels.to(device=labels.device, dtype=labels.dtype)
    mw, mh, md = (_smoothing_matrices(n, taps) for n in (w, h, d))
    x = labels[:, None] @ mw.transpose(1, 2).view(1, s, 1, 1, w, w)  # (B, S, K, D, H, W)
    x = mh.view(1, s, 1, 1, h, h) @ x
    x = md.view(1, s, 1, d, d) @ x.reshape(b, s, k, d, h * w)
    return x.reshape(b, s * k, d, h, w)


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
        # within class c: context_bias[c] + context_weights[c] . class_context (zero: the lookup)
        s = len(CONTEXT_SIGMAS)
        self.register_buffer("context_bias", torch.zeros(k))
        self.register_buffer("context_weights", torch.zeros(k, s * k))
        self.register_buffer("_kernels", _context_kernels(), persistent=False)
        self.floor = IntensityFloor()  # fitted by fit_to_data

    #: buffers a checkpoint from before the context term lacks; they then stay zero
    OPTIONAL_STATE = ("context_bias", "context_weights")

    def lookup(self, labels: torch.Tensor) -> torch.Tensor:
        """Per-class mean image ``(B, 1, D, H, W)`` of a (soft) one-hot label map."""
        return torch.einsum("bkdhw,k->bdhw", labels, self.class_means.to(labels.dtype))[:, None]

    def estimate(self, labels: torch.Tensor) -> torch.Tensor:
        """The classical estimate ``(B, 1, D, H, W)`` the output starts from: the lookup plus
        each class's linear function of its neighbourhood's class fractions."""
        base = self.lookup(labels)
        context = class_context(labels, self._kernels)
        w = self.context_weights.to(labels.dtype)
        per_class = F.conv3d(context, w[:, :, None, None, None],
                             self.context_bias.to(labels.dtype))
        return base + (labels * per_class).sum(1, keepdim=True)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        check_input(labels, self.in_channels, self.size_multiple, "SPADEGenerator3D")
        coarse = [s // self.size_multiple for s in labels.shape[2:]]
        h = self.stem(F.adaptive_avg_pool3d(labels, coarse))
        for block in self.blocks:
            h = block(h, labels)
            h = F.interpolate(h, scale_factor=2, mode="trilinear", align_corners=False)
        h = self.final(h, labels)
        delta = self.head(nn.functional.leaky_relu(h, 0.2))
        return self.floor(self.estimate(labels) + delta.to(labels.dtype))

    @torch.no_grad()
    def fit_to_data(self, data) -> None:
        """Fit the starting estimate on training data: the lookup table (mean normalised
        intensity of each class; a class absent from the data gets the overall mean), then
        per class a ridge regression of what the lookup leaves over on the class fractions
        around the voxel (:func:`class_context`, the operator the forward pass uses), on up
        to 50 000 voxels of that class drawn with a fixed seed (every DDP rank fits the same);
        and the output floor, the darkest training voxel.

        ``data`` is a :class:`napari_medgan.data.datasets.TrainingData` with
        ``volumes`` and ``label_arrays``.
        """
        from napari_medgan.baselines import fit_class_means

        means = fit_class_means(data.volumes, data.label_arrays, self.in_channels)
        self.class_means.copy_(torch.as_tensor(means, dtype=self.class_means.dtype))
        bias, weights = fit_context(data.volumes, data.label_arrays, means, self._kernels)
        self.context_bias.copy_(torch.as_tensor(bias, dtype=self.context_bias.dtype))
        self.context_weights.copy_(torch.as_tensor(weights, dtype=self.context_weights.dtype))
        self.floor.fit(data.volumes)


def fit_context(volumes, label_arrays, class_means, kernels: torch.Tensor):
    """Per-class ridge regression of ``volume - class_means[label]`` on the voxel's
    :func:`class_context`; returns ``(bias (K,), weights (K, S*K))`` as float64 arrays, zero
    for a class with too few voxels to fit (it keeps the lookup)."""
    import numpy as np

    k, s = len(class_means), kernels.shape[0]
    rng = np.random.default_rng(0)
    counts = np.zeros(k, np.int64)
    for lab in label_arrays:
        counts += np.bincount(np.asarray(lab, np.int64).ravel(), minlength=k)[:k]
    # sample each class across volumes in proportion to its voxels there
    rows: list[list[np.ndarray]] = [[] for _ in range(k)]
    targets: list[list[np.ndarray]] = [[] for _ in range(k)]
    for vol, lab in zip(volumes, label_arrays):
        lab = np.asarray(lab, np.int64)
        flat = lab.ravel()
        picks = {}
        for c in range(k):
            where = np.flatnonzero(flat == c)
            if where.size == 0:
                continue
            n = min(where.size, int(np.ceil(_CONTEXT_SAMPLES * where.size / counts[c])))
            picks[c] = where if n == where.size else rng.choice(where, n, replace=False)
        if not picks:
            continue
        columns = {c: np.empty((idx.size, s * k), np.float32) for c, idx in picks.items()}
        for j in range(k):  # one class's fractions at a time: a few volumes of memory
            onehot = torch.from_numpy((lab == j).astype(np.float32))[None, None]
            ctx = class_context(onehot, kernels).reshape(s, -1).numpy()
            for c, idx in picks.items():
                columns[c][:, j::k] = ctx[:, idx].T  # channel s*K + j
        y = np.asarray(vol, np.float64).ravel()
        for c, idx in picks.items():
            rows[c].append(columns[c])
            targets[c].append(y[idx] - float(class_means[c]))
    bias, weights = np.zeros(k), np.zeros((k, s * k))
    for c in range(k):
        if not rows[c]:
            continue
        x = np.concatenate(rows[c]).astype(np.float64)
        if x.shape[0] < 10 * (x.shape[1] + 1):
            continue
        r = np.concatenate(targets[c])
        mean_x, mean_r = x.mean(0), r.mean()
        xc = x - mean_x  # the intercept is not penalised
        gram = xc.T @ xc + _CONTEXT_RIDGE * x.shape[0] * np.eye(x.shape[1])
        w = np.linalg.solve(gram, xc.T @ (r - mean_r))
        weights[c], bias[c] = w, mean_r - mean_x @ w
    return bias, weights
