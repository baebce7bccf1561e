"""Paired image metrics (prediction vs. reference) for conditional tasks.

All functions take numpy arrays indexed ``(z, y, x)`` and return Python floats.
The computation is MONAI's (``monai.metrics``, ``spatial_dims=3``); this module
only adds masking, input checks and a fixed, documented choice of settings. The batch
(MS-)SSIM of set metrics (:func:`compute_ssim_batch`, :func:`compute_ms_ssim_batch`) is
MONAI's formula with its Gaussian window applied as three 1D filters (the window is a
product of 1D Gaussians, so the result is the same to float32 rounding; the tests compare
the two): the set metrics of 16 real and 16 synthetic 64^3 volumes (the demo's) took 32 s
through the full 7^3 window and 4 s this way on a 2-core CPU.

Settings and why
----------------
* SSIM: Gaussian window of 11 voxels per axis, sigma 1.5, K1 = 0.01, K2 = 0.03
  (Wang et al. 2004, the values scikit-image uses with ``gaussian_weights=True``).
  MONAI convolves without padding ("valid"), so the SSIM map only covers voxels
  at least 5 from every border -- exactly the region scikit-image averages
  after its own border crop, which is why the two agree to float32 precision.
  Windows are in voxels, so anisotropic spacing is not taken into account.
* MS-SSIM: 3 scales, Gaussian window of 7, sigma 1.5, and the first three of
  Wang et al.'s (2003) five scale weights renormalised to sum to one. MONAI
  requires ``side // (n_weights - 1)**2 > kernel_size - 1`` on every axis (its
  check, stricter than the ``2**(n_scales - 1)`` downsampling needs); the
  standard 5 scales with an 11-voxel window would need sides of at least 176
  voxels. With these settings every side must be at least
  :data:`MS_SSIM_MIN_SIDE` (28) voxels, so 32^3 and 64^3 volumes work.
* MONAI computes SSIM in float32; images far from zero (CT in HU) lose a little
  precision in the variance terms, well below the 1e-3 level.

References
----------
Wang, Z., Bovik, A. C., Sheikh, H. R., Simoncelli, E. P. (2004). Image quality
assessment: from error visibility to structural similarity. IEEE TIP 13(4), 600-612.
Wang, Z., Simoncelli, E. P., Bovik, A. C. (2003). Multiscale structural similarity
for image quality assessment. Asilomar Conference on Signals, Systems & Computers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import MAEMetric, PSNRMetric, SSIMMetric
from monai.metrics.regression import compute_ssim_and_cs

#: SSIM window (voxels per axis) and Gaussian sigma, as in Wang et al. (2004).
SSIM_WIN_SIZE = 11
SSIM_SIGMA = 1.5
#: MS-SSIM settings; see the module docstring for why they differ from 2D defaults.
MS_SSIM_KERNEL_SIZE = 7
MS_SSIM_SIGMA = 1.5
_WANG_2003_WEIGHTS = (0.0448, 0.2856, 0.3001)
MS_SSIM_WEIGHTS = tuple(w / sum(_WANG_2003_WEIGHTS) for w in _WANG_2003_WEIGHTS)
#: Smallest side MONAI accepts for the MS-SSIM settings above.
MS_SSIM_MIN_SIDE = MS_SSIM_KERNEL_SIZE * max(1, len(MS_SSIM_WEIGHTS) - 1) ** 2

#: What each key of :func:`paired_metrics` means (copied into reports).
DEFINITIONS = {
    "mae": "mean |fake - real| over the (masked) voxels, in the volumes' own units (e.g. HU); "
    "lower is better",
    "psnr": "20 log10(data_range) - 10 log10(MSE) in dB over the (masked) voxels; higher is better",
    "ssim": "mean SSIM map (Wang et al. 2004; MONAI, Gaussian window 11, sigma 1.5, K1 0.01, "
    "K2 0.03), over windows centred in the mask when masked; None if a side < 11 voxels; "
    "in [-1, 1], higher is better",
    "ms_ssim": "3-scale MS-SSIM (Wang et al. 2003; MONAI, window 7, sigma 1.5, weights "
    "0.0711/0.4530/0.4760), whole volume even when masked; None if a side < 28 voxels; "
    "in [0, 1], higher is better",
}


def _as_volume(array: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(getattr(array, "array", array))
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 3D array (z, y, x), got shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite numbers (no NaN/inf), dtype {arr.dtype}")
    return arr


def _check_pair(pred, ref, mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    pred = _as_volume(pred, "pred")
    ref = _as_volume(ref, "ref")
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref must have the same shape, got {pred.shape} and {ref.shape}")
    if mask is not None:
        mask = np.asarray(getattr(mask, "array", mask))
        if mask.shape != ref.shape:
            raise ValueError(f"mask must have the shape of ref {ref.shape}, got {mask.shape}")
        mask = mask.astype(bool)
        if not mask.any():
            raise ValueError("mask is empty: no voxel to evaluate")
    return pred, ref, mask


def _check_range(data_range: float) -> float:
    value = float(data_range)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"data_range must be a positive finite number, got {data_range!r}")
    return value


def _tensor(array: np.ndarray) -> torch.Tensor:
    """(z, y, x) -> (1, 1, z, y, x) float64 (MONAI casts to float32 where it needs to)."""
    return torch.as_tensor(np.ascontiguousarray(array, dtype=np.float64))[None, None]


def _voxels(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None):
    """Voxels to compare as (1, N) tensors: MONAI's error metrics average over all but dim 0."""
    if mask is not None:
        pred, ref = pred[mask], ref[mask]
    return _tensor(pred.reshape(-1))[0], _tensor(ref.reshape(-1))[0]


def compute_mae(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error, in the units of the inputs (e.g. HU for CT).

    Parameters
    ----------
    pred, ref : np.ndarray
        Prediction and reference, shape ``(z, y, x)``, in original units
        (undo any intensity normalisation first, or the MAE is in [-1, 1] units).
    mask : np.ndarray of bool, optional
        Only voxels where ``mask`` is true are averaged.

    Returns
    -------
    float
        ``mean(|pred - ref|)`` over the (masked) voxels, computed with
        ``monai.metrics.MAEMetric``.
    """
    pred, ref, mask = _check_pair(pred, ref, mask)
    return float(MAEMetric(reduction="mean")(*_voxels(pred, ref, mask)))


def compute_psnr(
    pred: np.ndarray, ref: np.ndarray, data_range: float, mask: np.ndarray | None = None
) -> float:
    """Peak signal-to-noise ratio in dB: ``20 log10(data_range) - 10 log10(MSE)``.

    Parameters
    ----------
    pred, ref : np.ndarray
        Shape ``(z, y, x)``.
    data_range : float
        Peak-to-peak range of the signal (``max - min`` the data may take, e.g.
        2000 for CT clipped to [-1000, 1000] HU). PSNR is meaningless without it.
    mask : np.ndarray of bool, optional
        MSE only over voxels where ``mask`` is true.

    Returns
    -------
    float
        PSNR in dB (``inf`` for identical inputs), via ``monai.metrics.PSNRMetric``.
    """
    pred, ref, mask = _check_pair(pred, ref, mask)
    metric = PSNRMetric(max_val=_check_range(data_range), reduction="mean")
    with np.errstate(divide="ignore"):
        return float(metric(*_voxels(pred, ref, mask)))


def ssim_map(
    pred: np.ndarray,
    ref: np.ndarray,
    data_range: float,
    win_size: int = SSIM_WIN_SIZE,
    sigma: float = SSIM_SIGMA,
) -> np.ndarray:
    """Per-voxel SSIM map from MONAI's ``compute_ssim_and_cs``.

    The map is the "valid" part only: shape ``(Z - w + 1, Y - w + 1, X - w + 1)``
    for window ``w``; entry ``[k, j, i]`` is the SSIM of the window centred on
    voxel ``[k + r, j + r, i + r]`` with ``r = (w - 1) // 2``.
    """
    pred, ref, _ = _check_pair(pred, ref)
    win_size = int(win_size)
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be a positive odd integer, got {win_size}")
    if min(ref.shape) < win_size:
        raise ValueError(
            f"SSIM window {win_size} does not fit in a volume of shape {ref.shape}; "
            f"use a smaller win_size"
        )
    ssim, _ = compute_ssim_and_cs(
        _tensor(pred),
        _tensor(ref),
        spatial_dims=3,
        kernel_size=(win_size,) * 3,
        kernel_sigma=(float(sigma),) * 3,
        data_range=_check_range(data_range),
    )
    return ssim[0, 0].double().numpy()


def compute_ssim(
    pred: np.ndarray,
    ref: np.ndarray,
    data_range: float,
    mask: np.ndarray | None = None,
    win_size: int = SSIM_WIN_SIZE,
    sigma: float = SSIM_SIGMA,
) -> float:
    """Structural similarity (Wang et al. 2004) of two 3D volumes.

    Parameters
    ----------
    pred, ref : np.ndarray
        Shape ``(z, y, x)``, every side at least ``win_size``.
    data_range : float
        Peak-to-peak range; sets the stabilising constants ``(K * data_range)^2``.
    mask : np.ndarray of bool, optional
        Average the SSIM map only over windows *centred* in the mask (voxels
        closer than ``(win_size - 1) // 2`` to the border have no window).
    win_size, sigma : int, float
        Gaussian window, 11 and 1.5 by default.

    Returns
    -------
    float
        Mean SSIM in [-1, 1]; 1 for identical volumes. Without a mask this is
        ``monai.metrics.SSIMMetric``.
    """
    pred, ref, mask = _check_pair(pred, ref, mask)
    if mask is None:
        if min(ref.shape) < win_size:
            raise ValueError(f"SSIM window {win_size} does not fit in shape {ref.shape}")
        metric = SSIMMetric(
            spatial_dims=3,
            data_range=_check_range(data_range),
            win_size=int(win_size),
            kernel_sigma=float(sigma),
            reduction="mean",
        )
        return float(metric(_tensor(pred), _tensor(ref)))
    smap = ssim_map(pred, ref, data_range, win_size, sigma)
    r = (int(win_size) - 1) // 2
    inner = mask[r : r + smap.shape[0], r : r + smap.shape[1], r : r + smap.shape[2]]
    if not inner.any():
        raise ValueError(
            f"mask has no voxel at least {r} voxels from the border, where SSIM windows are centred"
        )
    return float(smap[inner].mean())


def ms_ssim_supported(shape: tuple[int, ...]) -> bool:
    """True when every side is large enough for the MS-SSIM settings of this module."""
    return len(shape) == 3 and min(shape) >= MS_SSIM_MIN_SIDE


def _batch_tensors(pred, ref) -> tuple[torch.Tensor, torch.Tensor]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.ndim != 4 or pred.shape != ref.shape:
        raise ValueError(
            f"expected two (B, z, y, x) batches of one shape, got {pred.shape}, {ref.shape}"
        )
    to_t = lambda a: torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32))[:, None]  # noqa: E731
    return to_t(pred), to_t(ref)


def _gaussian_blur_valid(x: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """``(N, 1, z, y, x)`` filtered by MONAI's SSIM window (a normalised Gaussian of ``size``
    taps per axis), without padding, one axis at a time as a weighted sum of shifted views
    (on a 2-core CPU 6x faster than 1D convolutions, which take a slow path for one channel)."""
    dist = torch.arange((1 - size) / 2, (1 + size) / 2, 1.0, dtype=torch.float64)
    taps = torch.exp(-((dist / sigma) ** 2) / 2)
    taps = (taps / taps.sum()).tolist()
    for axis in (2, 3, 4):
        n = x.shape[axis] - size + 1
        out = x.narrow(axis, 0, n) * taps[0]
        for i in range(1, size):
            out.add_(x.narrow(axis, i, n), alpha=taps[i])
        x = out
    return x


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor, data_range: float, size: int,
                 sigma: float, k1: float = 0.01, k2: float = 0.03):
    """SSIM and contrast-sensitivity maps of ``(B, 1, z, y, x)`` batches: the formula of
    ``monai.metrics.regression.compute_ssim_and_cs``, its window applied separably."""
    b = x.shape[0]
    moments = _gaussian_blur_valid(torch.cat([x, y, x * x, y * y, x * y]), size, sigma)
    mu_x, mu_y, mu_xx, mu_yy, mu_xy = moments.split(b)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    sigma_x, sigma_y = mu_xx - mu_x * mu_x, mu_yy - mu_y * mu_y
    cs = (2 * (mu_xy - mu_x * mu_y) + c2) / (sigma_x + sigma_y + c2)
    return ((2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)) * cs, cs


def compute_ssim_batch(
    pred: np.ndarray, ref: np.ndarray, data_range: float, win_size: int = SSIM_WIN_SIZE
) -> np.ndarray:
    """Whole-volume SSIM for batches of volumes, shapes ``(B, z, y, x)``; returns ``(B,)``
    (``monai.metrics.SSIMMetric``'s value)."""
    tp, tr = _batch_tensors(pred, ref)
    if min(tp.shape[2:]) < win_size:
        raise ValueError(f"SSIM window {win_size} does not fit in shape {tuple(tp.shape[2:])}")
    ssim, _ = _ssim_and_cs(tp, tr, _check_range(data_range), int(win_size), SSIM_SIGMA)
    return ssim.flatten(1).mean(1).double().numpy()


def compute_ms_ssim_batch(pred: np.ndarray, ref: np.ndarray, data_range: float) -> np.ndarray:
    """MS-SSIM for batches of volumes, shapes ``(B, z, y, x)``; returns ``(B,)``."""
    tp, tr = _batch_tensors(pred, ref)
    if not ms_ssim_supported(tuple(tp.shape[2:])):
        raise ValueError(
            f"MS-SSIM ({len(MS_SSIM_WEIGHTS)} scales, window {MS_SSIM_KERNEL_SIZE}) needs every "
            f"side >= {MS_SSIM_MIN_SIDE} voxels, got shape {tuple(tp.shape[2:])}; "
            "use compute_ssim instead"
        )
    data_range = _check_range(data_range)
    scales = []  # as monai.metrics.MultiScaleSSIMMetric: contrast at each scale, SSIM last
    for level in range(len(MS_SSIM_WEIGHTS)):
        if level:
            tp, tr = F.avg_pool3d(tp, 2), F.avg_pool3d(tr, 2)
        ssim, cs = _ssim_and_cs(tp, tr, data_range, MS_SSIM_KERNEL_SIZE, MS_SSIM_SIGMA)
        scales.append(torch.relu((ssim if level == len(MS_SSIM_WEIGHTS) - 1 else cs)
                                 .flatten(1).mean(1)))
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float32).view(-1, 1)
    return torch.prod(torch.stack(scales) ** weights, dim=0).double().numpy()


def compute_ms_ssim(pred: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    """Multi-scale SSIM (Wang et al. 2003) with the 3-scale settings of this module.

    Parameters
    ----------
    pred, ref : np.ndarray
        Shape ``(z, y, x)``, every side at least :data:`MS_SSIM_MIN_SIDE` voxels.
    data_range : float
        Peak-to-peak range of the signal.

    Returns
    -------
    float
        MS-SSIM in [0, 1] (MONAI clamps negative scale terms to 0).
    """
    pred, ref, _ = _check_pair(pred, ref)
    return float(compute_ms_ssim_batch(pred[None], ref[None], data_range)[0])


def paired_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    data_range: float | None = None,
    mask: np.ndarray | None = None,
) -> dict:
    """MAE, PSNR, SSIM (and MS-SSIM when the volume is large enough) for one pair.

    Parameters
    ----------
    pred, ref : np.ndarray
        Prediction and reference, shape ``(z, y, x)``, in original units.
    data_range : float, optional
        Peak-to-peak range for PSNR/SSIM. Default: ``ref.max() - ref.min()``
        (stated in the result, since PSNR and SSIM depend on it).
    mask : np.ndarray of bool, optional
        Restricts MAE, PSNR and SSIM to the mask; MS-SSIM is always whole-volume
        (its coarse scales have no per-voxel meaning).

    Returns
    -------
    dict
        ``mae``, ``psnr``, ``ssim``, ``ms_ssim`` (None when the volume is too
        small), ``data_range``, ``data_range_source``, ``masked``, ``mask_voxels``.
    """
    pred, ref, mask = _check_pair(pred, ref, mask)
    if data_range is None:
        data_range = float(ref.max() - ref.min())
        source = "reference max - min"
        if data_range <= 0:
            raise ValueError("data_range: reference is constant, pass data_range explicitly")
    else:
        source = "given"
    data_range = _check_range(data_range)
    can_ssim = min(ref.shape) >= SSIM_WIN_SIZE
    return {
        "mae": compute_mae(pred, ref, mask),
        "psnr": compute_psnr(pred, ref, data_range, mask),
        "ssim": compute_ssim(pred, ref, data_range, mask) if can_ssim else None,
        "ms_ssim": compute_ms_ssim(pred, ref, data_range) if ms_ssim_supported(ref.shape) else None,
        "data_range": data_range,
        "data_range_source": source,
        "masked": mask is not None,
        "mask_voxels": int(mask.sum()) if mask is not None else int(ref.size),
    }
