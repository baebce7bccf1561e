"""Set-level (unpaired) metrics for unconditional generation.

Intensity histograms, kernel and Frechet distances between feature sets, and
within-set diversity. Volumes are numpy arrays indexed ``(z, y, x)``; feature
sets are ``(N, F)`` arrays (see :mod:`napari_medgan.metrics.features`).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import linalg

from napari_medgan.metrics.image import (
    MS_SSIM_KERNEL_SIZE,
    MS_SSIM_MIN_SIDE,
    MS_SSIM_WEIGHTS,
    SSIM_SIGMA,
    SSIM_WIN_SIZE,
    compute_ms_ssim_batch,
    compute_ssim_batch,
    ms_ssim_supported,
)
from napari_medgan.metrics.wasserstein import wasserstein_1d

#: Kernels accepted by :func:`compute_mmd`.
MMD_KERNELS = ("rbf", "polynomial")

#: Set-level figures of the report: name -> (definition, better, range).
DEFINITIONS = {
    "intensity_wasserstein": (
        "Wasserstein-1 distance between pooled voxel intensities (scipy.stats' formula), at most "
        "200k voxels per set drawn with the report seed; uncropped volumes",
        "lower",
        "[0, inf) in intensity units",
    ),
    "frechet_distance": (
        "Frechet distance of Gaussians fitted to extractor features (FID formula, Heusel et al. "
        "2017)",
        "lower",
        "[0, inf); not comparable to published Inception FIDs",
    ),
    "mmd2": (
        "unbiased MMD^2 of extractor features (Gretton et al. 2012), RBF kernel, median-heuristic "
        "bandwidth",
        "lower",
        "about 0 for equal distributions (can be slightly negative), at most 2",
    ),
    "diversity_ratio": (
        "mean pairwise MS-SSIM among fakes / among reals (SSIM if a side < 28 voxels), both with "
        "the real data range",
        "closer to 1",
        "> 1: fakes less varied than real (mode collapse); < 1: more varied",
    ),
}


def _volumes(arrays: Sequence, name: str, same_shape: bool = False) -> list[np.ndarray]:
    out = [np.asarray(getattr(a, "array", a)) for a in arrays]
    if not out:
        raise ValueError(f"{name} is empty: need at least one volume")
    for i, a in enumerate(out):
        if a.ndim != 3:
            raise ValueError(f"{name}[{i}] must be 3D (z, y, x), got shape {a.shape}")
    if same_shape and len({a.shape for a in out}) > 1:
        raise ValueError(f"{name}: volumes differ in shape {sorted({a.shape for a in out})}")
    return out


def _features(feats, name: str, min_rows: int = 2) -> np.ndarray:
    arr = np.asarray(feats, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2D (N, F) feature array, got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} samples, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _pooled_sample(arrays, mask_threshold, max_samples, seed, name) -> np.ndarray:
    voxels = np.concatenate([a.reshape(-1).astype(np.float64) for a in arrays])
    if mask_threshold is not None:
        voxels = voxels[voxels > mask_threshold]
        if voxels.size == 0:
            raise ValueError(f"{name}: no voxel above mask_threshold={mask_threshold}")
    if voxels.size > max_samples:
        # Same seed for both sets: identical sets draw identical samples (distance exactly 0).
        idx = np.random.default_rng(seed).integers(0, voxels.size, size=max_samples)
        voxels = voxels[idx]
    return voxels


def histogram_wasserstein(
    real_arrays: Sequence,
    fake_arrays: Sequence,
    mask_threshold: float | None = None,
    max_samples: int = 200_000,
    seed: int = 0,
) -> float:
    """Wasserstein-1 distance between the pooled voxel intensities of two sets.

    Parameters
    ----------
    real_arrays, fake_arrays : sequence of np.ndarray
        Volumes ``(z, y, x)`` in the same intensity units (e.g. HU).
    mask_threshold : float, optional
        Keep only voxels strictly above this value (e.g. -900 HU to drop air),
        so that background does not dominate the distance.
    max_samples : int
        Each set is subsampled (with replacement, fixed ``seed``) to at most this
        many voxels; the estimate's error is ~ range / sqrt(max_samples).
    seed : int
        Seed of the subsampling.

    Returns
    -------
    float
        W1 in intensity units (:func:`~napari_medgan.metrics.wasserstein.wasserstein_1d`);
        0 for identical sets. Lower is better.

    References
    ----------
    Villani, C. (2009). Optimal Transport: Old and New. Springer.
    """
    if int(max_samples) < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    real = _pooled_sample(
        _volumes(real_arrays, "real_arrays"), mask_threshold, int(max_samples), seed, "real"
    )
    fake = _pooled_sample(
        _volumes(fake_arrays, "fake_arrays"), mask_threshold, int(max_samples), seed, "fake"
    )
    return wasserstein_1d(real, fake)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)  # rounding can give tiny negatives


def median_heuristic_bandwidth(real_feats, fake_feats) -> float:
    """Median pairwise Euclidean distance of the pooled samples (Gretton et al. 2012, Sec. 8)."""
    z = np.concatenate(
        [_features(real_feats, "real_feats", 1), _features(fake_feats, "fake_feats", 1)]
    )
    d = np.sqrt(_sq_dists(z, z)[np.triu_indices(len(z), k=1)])
    d = d[d > 0]
    return float(np.median(d)) if d.size else 1.0


def _kernel(a, b, kernel: str, bandwidth: float) -> np.ndarray:
    if kernel == "rbf":
        return np.exp(-_sq_dists(a, b) / (2.0 * bandwidth**2))
    # Cubic polynomial kernel of KID (Binkowski et al. 2018).
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def compute_mmd(
    real_feats, fake_feats, kernel: str = "rbf", bandwidth: float | None = None
) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy, MMD^2_u.

    ``MMD^2_u = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j)
    - 2 mean_{i, j} k(x_i, y_j)`` (Gretton et al. 2012, Lemma 6).

    Parameters
    ----------
    real_feats, fake_feats : array (N, F), (M, F)
        Feature vectors, at least 2 of each.
    kernel : {"rbf", "polynomial"}
        ``rbf``: ``exp(-|x - y|^2 / (2 bandwidth^2))``; ``polynomial``:
        ``(x.y / F + 1)^3``, which makes this the Kernel Inception Distance.
    bandwidth : float, optional
        RBF bandwidth; default the median heuristic
        (:func:`median_heuristic_bandwidth`).

    Returns
    -------
    float
        MMD^2_u; 0 in expectation when both sets come from one distribution,
        and then it can be slightly negative. Lower is better. For the *same*
        set passed twice it equals ``-2 (1 - mean_{i != j} k(x_i, x_j)) / N``
        (the cross term includes ``k(x_i, x_i) = 1``), not 0.

    References
    ----------
    Gretton, A., Borgwardt, K. M., Rasch, M. J., Schoelkopf, B., Smola, A. (2012).
    A kernel two-sample test. JMLR 13, 723-773.
    Binkowski, M., Sutherland, D. J., Arbel, M., Gretton, A. (2018). Demystifying
    MMD GANs. ICLR.
    """
    x = _features(real_feats, "real_feats")
    y = _features(fake_feats, "fake_feats")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: real_feats {x.shape[1]}, fake_feats {y.shape[1]}")
    if kernel not in MMD_KERNELS:
        raise ValueError(f"kernel must be one of {MMD_KERNELS}, got {kernel!r}")
    if bandwidth is None:
        bandwidth = median_heuristic_bandwidth(x, y)
    if not np.isfinite(bandwidth) or bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth!r}")
    m, n = len(x), len(y)
    kxx, kyy, kxy = (
        _kernel(x, x, kernel, bandwidth),
        _kernel(y, y, kernel, bandwidth),
        _kernel(x, y, kernel, bandwidth),
    )
    term_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    term_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(term_x + term_y - 2.0 * kxy.mean())


def frechet_distance(real_feats, fake_feats, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (the FID formula).

    ``|mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))`` (Heusel et al. 2017),
    the matrix square root by ``scipy.linalg.sqrtm``; when it is not finite
    (singular covariances), ``eps`` is added to both diagonals, as pytorch-fid does.

    Parameters
    ----------
    real_feats, fake_feats : array (N, F), (M, F)
        At least 2 samples each. With fewer samples than features the
        covariances are singular and the estimate is strongly biased upwards
        (Chong & Forsyth 2020): compare values only at equal sample sizes.

    Returns
    -------
    float
        >= 0 (rounding aside); 0 for identical sets. Lower is better.

    References
    ----------
    Heusel, M., Ramsauer, H., Unterthiner, T., Nessler, B., Hochreiter, S. (2017).
    GANs trained by a two time-scale update rule converge to a local Nash
    equilibrium. NeurIPS.
    Chong, M. J., Forsyth, D. (2020). Effectively unbiased FID and Inception
    score and where to find them. CVPR.
    """
    x = _features(real_feats, "real_feats")
    y = _features(fake_feats, "fake_feats")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: real_feats {x.shape[1]}, fake_feats {y.shape[1]}")
    mu1, mu2 = x.mean(0), y.mean(0)
    s1 = np.atleast_2d(np.cov(x, rowvar=False))
    s2 = np.atleast_2d(np.cov(y, rowvar=False))
    with warnings.catch_warnings():
        # Singular covariances (N <= F) are expected and documented; finiteness is checked below.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.all(np.isfinite(covmean)):
            offset = np.eye(len(s1)) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)  # imaginary parts are rounding noise of a PSD product
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def _pairs(n: int, max_pairs: int, seed: int) -> list[tuple[int, int]]:
    pairs = list(itertools.combinations(range(n), 2))
    if len(pairs) > max_pairs:
        keep = np.random.default_rng(seed).choice(len(pairs), size=max_pairs, replace=False)
        pairs = [pairs[i] for i in sorted(keep)]
    return pairs


def _measure_for(shape: tuple[int, ...], measure: str | None) -> str:
    if measure is None:
        return "ms-ssim" if ms_ssim_supported(shape) else "ssim"
    if measure not in ("ms-ssim", "ssim"):
        raise ValueError(f"measure must be 'ms-ssim' or 'ssim', got {measure!r}")
    if measure == "ms-ssim" and not ms_ssim_supported(shape):
        raise ValueError(
            f"measure 'ms-ssim' needs every side >= {MS_SSIM_MIN_SIDE}, got shape {shape}"
        )
    return measure


def _measure_settings(measure: str) -> dict:
    if measure == "ms-ssim":
        return {"kernel_size": MS_SSIM_KERNEL_SIZE, "sigma": 1.5, "weights": list(MS_SSIM_WEIGHTS)}
    return {"win_size": SSIM_WIN_SIZE, "sigma": SSIM_SIGMA}


def diversity(
    arrays: Sequence,
    data_range: float | None = None,
    measure: str | None = None,
    max_pairs: int = 190,
    seed: int = 0,
    batch_size: int = 8,
) -> dict:
    """Mean pairwise (MS-)SSIM within a set of volumes.

    High values mean the volumes look alike (low diversity); a GAN whose samples
    are much more alike than the training images has mode-collapsed
    (Odena et al. 2017 used mean pairwise MS-SSIM this way).

    Parameters
    ----------
    arrays : sequence of np.ndarray
        At least 2 volumes ``(z, y, x)`` of one shape.
    data_range : float, optional
        Default: pooled ``max - min`` of the set.
    measure : {"ms-ssim", "ssim"}, optional
        Default: MS-SSIM when every side is at least ``MS_SSIM_MIN_SIDE``,
        otherwise SSIM. The result says which was used.
    max_pairs : int
        At most this many pairs (a fixed-``seed`` random subset of all pairs).
    batch_size : int
        Pairs per MONAI call.

    Returns
    -------
    dict
        ``value`` (mean), ``std``, ``measure``, ``settings``, ``pairs``,
        ``data_range``, ``n``.

    References
    ----------
    Odena, A., Olah, C., Shlens, J. (2017). Conditional image synthesis with
    auxiliary classifier GANs. ICML.
    """
    vols = _volumes(arrays, "arrays", same_shape=True)
    if len(vols) < 2:
        raise ValueError(f"arrays: diversity needs at least 2 volumes, got {len(vols)}")
    if int(max_pairs) < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    measure = _measure_for(vols[0].shape, measure)
    if data_range is None:
        data_range = float(max(a.max() for a in vols) - min(a.min() for a in vols))
        if data_range <= 0:
            data_range = 1.0  # a constant set: every pair is identical, the range does not matter
    fn = compute_ms_ssim_batch if measure == "ms-ssim" else compute_ssim_batch
    pairs = _pairs(len(vols), int(max_pairs), seed)
    scores = []
    for start in range(0, len(pairs), max(1, int(batch_size))):
        chunk = pairs[start : start + max(1, int(batch_size))]
        a = np.stack([vols[i] for i, _ in chunk])
        b = np.stack([vols[j] for _, j in chunk])
        scores.append(fn(a, b, data_range))
    scores = np.concatenate(scores)
    return {
        "value": float(scores.mean()),
        "std": float(scores.std()),
        "measure": measure,
        "settings": _measure_settings(measure),
        "pairs": len(pairs),
        "data_range": float(data_range),
        "n": len(vols),
    }


def diversity_ratio(
    real: Sequence,
    fake: Sequence,
    data_range: float | None = None,
    max_pairs: int = 190,
    seed: int = 0,
) -> dict:
    """Mean pairwise similarity of the fakes divided by that of the real volumes.

    Both sets use the same measure (MS-SSIM unless either is too small, then
    SSIM) and the same data range (the real set's pooled ``max - min`` unless
    given), so the ratio compares like with like.

    Returns
    -------
    dict
        ``value`` = fake / real: about 1 when the fakes are as varied as the
        real data, >> 1 for mode collapse, < 1 when fakes are more varied
        (often noise). Also ``real`` and ``fake`` (the :func:`diversity` dicts)
        and ``measure``.
    """
    real_v = _volumes(real, "real", same_shape=True)
    fake_v = _volumes(fake, "fake", same_shape=True)
    if real_v[0].shape != fake_v[0].shape:
        raise ValueError(f"real and fake shapes differ: {real_v[0].shape} vs {fake_v[0].shape}")
    measure = _measure_for(real_v[0].shape, None)
    if data_range is None:
        data_range = float(max(a.max() for a in real_v) - min(a.min() for a in real_v)) or 1.0
    d_real = diversity(real_v, data_range, measure, max_pairs, seed)
    d_fake = diversity(fake_v, data_range, measure, max_pairs, seed)
    if d_real["value"] <= 0:
        raise ValueError(
            f"real-set mean pairwise {measure} is {d_real['value']:.3g}; the ratio is undefined"
        )
    return {
        "value": d_fake["value"] / d_real["value"],
        "measure": measure,
        "real": d_real,
        "fake": d_fake,
    }
