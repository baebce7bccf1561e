"""The classical method each conditional task is judged against.

A GAN result means little without the number a simple method gets on the same
data, so the viewer and the benchmarks both call these functions, by the
names in :data:`BASELINES`.

============  =====================  ==========================================
task          baseline               function
============  =====================  ==========================================
label2image   class-mean lookup      :func:`fit_class_means` + :func:`lookup_image`
superres      trilinear              :func:`upsample_trilinear`
superres      cubic B-spline         :func:`upsample_bspline`
denoise       Gaussian smoothing     :func:`denoise_gaussian`
denoise       non-local means        :func:`denoise_nlm`
inpaint       biharmonic             :func:`inpaint_biharmonic`
translate     histogram matching     :func:`histogram_match`
============  =====================  ==========================================

Arrays are numpy ``(z, y, x)`` in original intensity units unless stated;
results are float32. Super-resolution works on :class:`Volume` (the grid
changes), with factors in ITK ``(x, y, z)`` order as in
:mod:`napari_medgan.data.superres`. scikit-image, scipy and torch are imported
on first use so reading :data:`BASELINES` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from napari_medgan.io.volume import Volume

#: task -> names of its baselines, in the order they are shown.
BASELINES: dict[str, tuple[str, ...]] = {
    "label2image": ("class-mean lookup",),
    "superres": ("trilinear", "cubic B-spline"),
    "denoise": ("Gaussian smoothing", "non-local means"),
    "inpaint": ("biharmonic",),
    "translate": ("histogram matching",),
}


def _skimage(submodule: str) -> Any:
    """``skimage.<submodule>``, with an install hint: scikit-image is an optional dependency."""
    from importlib import import_module

    try:
        return import_module(f"skimage.{submodule}")
    except ImportError as exc:
        raise ImportError("this baseline needs scikit-image: pip install scikit-image") from exc


def _check_3d(array: Any, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"{name}: expected a 3D array (z, y, x), got shape {array.shape}")
    return array


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    if labels.dtype == bool:
        return labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise ValueError(f"{name}: expected integer labels, got non-integer "
                             f"{labels.dtype} values")
        labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0, got min label {int(labels.min())}")
    return labels


# ------------------------------------------------------------------ label2image
def fit_class_means(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                    num_classes: int) -> np.ndarray:
    """Mean intensity of each class over all training pairs.

    Parameters
    ----------
    images : list of np.ndarray
        Intensity volumes ``(z, y, x)``.
    labels : list of np.ndarray
        Integer label maps ``(z, y, x)``, same shapes as ``images``, values
        in ``0 .. num_classes - 1``.
    num_classes : int
        Table length ``K``.

    Returns
    -------
    np.ndarray
        ``(K,)`` float32; a class absent from the training data gets the
        overall mean intensity.
    """
    if (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
            or num_classes < 1):
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
    if len(images) != len(labels) or not images:
        raise ValueError(f"fit_class_means: expected matching non-empty lists, got "
                         f"{len(images)} images and {len(labels)} label maps")
    sums = np.zeros(num_classes, dtype=np.float64)
    counts = np.zeros(num_classes, dtype=np.float64)
    for n, (image, label) in enumerate(zip(images, labels)):
        image = _check_3d(image, f"images[{n}]")
        label = _check_labels(_check_3d(label, f"labels[{n}]"), f"labels[{n}]")
        if image.shape != label.shape:
            raise ValueError(f"fit_class_means: pair {n} has image shape {image.shape} "
                             f"but label shape {label.shape}")
        if label.size and label.max() >= num_classes:
            raise ValueError(f"labels[{n}]: max label {int(label.max())} is out of range for "
                             f"num_classes={num_classes}")
        flat = label.ravel()
        sums += np.bincount(flat, weights=image.ravel().astype(np.float64), minlength=num_classes)
        counts += np.bincount(flat, minlength=num_classes)
    overall = sums.sum() / max(counts.sum(), 1.0)
    means = np.divide(sums, counts, out=np.full(num_classes, overall), where=counts > 0)
    return means.astype(np.float32)


def lookup_image(labels: np.ndarray, class_means: np.ndarray) -> np.ndarray:
    """Paint each voxel with its class mean.

    Parameters
    ----------
    labels : np.ndarray
        Integer label map ``(z, y, x)``.
    class_means : np.ndarray
        ``(K,)`` table from :func:`fit_class_means`.

    Returns
    -------
    np.ndarray
        float32 ``(z, y, x)``.

    Raises
    ------
    ValueError
        When a label is negative or ``>= K`` (the message names the max label).
    """
    table = np.asarray(class_means, dtype=np.float32).reshape(-1)
    labels = _check_labels(np.asarray(labels), "lookup_image")
    if labels.size and labels.max() >= table.size:
        raise ValueError(f"lookup_image: max label {int(labels.max())} is out of range for a "
                         f"table of {table.size} class means (labels 0..{table.size - 1})")
    return table[labels]


# --------------------------------------------------------------------- superres
def upsample_trilinear(volume: Volume, factors_xyz: Sequence[int]) -> Volume:
    """Trilinear upsampling onto the HR grid: :func:`napari_medgan.data.superres.upsample_volume`.

    ``volume.array`` is ``(z, y, x)``; ``factors_xyz`` is ITK ``(x, y, z)`` order.
    """
    from napari_medgan.data.superres import upsample_volume

    return upsample_volume(volume, factors_xyz)


def upsample_bspline(volume: Volume, factors_xyz: Sequence[int]) -> Volume:
    """Cubic B-spline upsampling onto the same HR grid as :func:`upsample_trilinear`:
    :func:`napari_medgan.data.superres.upsample_volume` with ``mode="scipy-bspline"`` (see there
    for how scipy's ``zoom`` is put on that grid).

    ``volume.array`` is ``(z, y, x)``; ``factors_xyz`` is ITK ``(x, y, z)`` order.
    """
    from napari_medgan.data.superres import upsample_volume

    return upsample_volume(volume, factors_xyz, mode="scipy-bspline")


# ---------------------------------------------------------------------- denoise
#: Daubechies-2 decomposition high-pass filter (PyWavelets' ``Wavelet("db2").dec_hi``).
_DB2_HIGH = np.array([-0.48296291314453416, 0.8365163037378079, -0.2241438680420134,
                      -0.12940952255126037])
_MAD_TO_SIGMA = 0.6744897501960817  # median |N(0, 1)|


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Robust noise standard deviation of a ``(z, y, x)`` array, in its intensity units.

    Donoho & Johnstone 1994 ("Ideal spatial adaptation by wavelet shrinkage",
    Biometrika): the median absolute finest-scale diagonal (``ddd``) db2
    wavelet coefficient divided by 0.6745, as
    ``skimage.restoration.estimate_sigma`` computes it, but without
    PyWavelets (not a dependency) and without the boundary coefficients.
    Assumes i.i.d. Gaussian noise; smooth structure barely leaks into ``ddd``.
    """
    from scipy import ndimage

    detail = _check_3d(image, "estimate_noise_sigma").astype(np.float64)
    if min(detail.shape) < 4:
        raise ValueError(f"estimate_noise_sigma: needs at least 4 voxels per axis, "
                         f"got shape {detail.shape}")
    for axis in range(3):
        detail = ndimage.convolve1d(detail, _DB2_HIGH, axis=axis, mode="reflect")
        detail = detail.take(np.arange(1, detail.shape[axis], 2), axis=axis)  # pywt's phase
    return float(np.median(np.abs(detail)) / _MAD_TO_SIGMA)


def denoise_gaussian(noisy: np.ndarray, sigma_vox: float = 1.0) -> np.ndarray:
    """Gaussian smoothing, ``sigma_vox`` voxels on every axis of a ``(z, y, x)`` array; float32."""
    from scipy import ndimage

    noisy = _check_3d(noisy, "denoise_gaussian")
    if not np.isfinite(sigma_vox) or sigma_vox <= 0:
        raise ValueError(f"denoise_gaussian: sigma_vox must be > 0, got {sigma_vox!r}")
    return ndimage.gaussian_filter(noisy.astype(np.float32), float(sigma_vox), mode="reflect")


def denoise_nlm(noisy: np.ndarray, sigma: float | None = None, patch_size: int = 3,
                patch_distance: int = 5) -> np.ndarray:
    """Non-local means in 3D.

    Buades et al. 2005, "A non-local algorithm for image denoising" (CVPR).

    Parameters
    ----------
    noisy : np.ndarray
        ``(z, y, x)`` in intensity units.
    sigma : float or None
        Noise standard deviation in the same units; estimated with
        :func:`estimate_noise_sigma` (the wavelet MAD estimator of
        ``skimage.restoration.estimate_sigma``) when None.
    patch_size, patch_distance : int
        Patch side and search radius, in voxels.

    Returns
    -------
    np.ndarray
        float32 ``(z, y, x)``, from ``denoise_nl_means(fast_mode=True)`` with
        ``h = 0.8 * sigma`` and ``sigma`` passed so the expected patch
        distance of pure noise is subtracted.
    """
    denoise_nl_means = _skimage("restoration").denoise_nl_means

    noisy = _check_3d(noisy, "denoise_nlm").astype(np.float64)
    if sigma is None:
        sigma = estimate_noise_sigma(noisy)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"denoise_nlm: sigma must be >= 0, got {sigma!r}")
    if sigma == 0:  # nothing to remove (e.g. a constant image): NLM with h=0 would divide by 0
        return noisy.astype(np.float32)
    out = denoise_nl_means(noisy, patch_size=patch_size, patch_distance=patch_distance,
                           h=0.8 * sigma, sigma=sigma, fast_mode=True, channel_axis=None)
    return np.asarray(out, dtype=np.float32)


# ---------------------------------------------------------------------- inpaint
def inpaint_biharmonic(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill missing voxels with the biharmonic (smoothest) continuation of their surroundings.

    Parameters
    ----------
    image : np.ndarray
        ``(z, y, x)``; values under the mask are ignored.
    mask : np.ndarray
        ``(z, y, x)``, ``> 0`` marks missing voxels.

    Returns
    -------
    np.ndarray
        float32; known voxels are ``image.astype(float32)`` bit for bit.
    """
    _inpaint = _skimage("restoration").inpaint_biharmonic

    image = _check_3d(image, "inpaint_biharmonic: image")
    missing = _check_3d(mask, "inpaint_biharmonic: mask") > 0
    if missing.shape != image.shape:
        raise ValueError(f"inpaint_biharmonic: mask shape {missing.shape} does not match "
                         f"image shape {image.shape}")
    known = image.astype(np.float32)
    if not missing.any():
        return known
    if missing.all():
        raise ValueError("inpaint_biharmonic: every voxel is masked; nothing to continue from")
    filled = _inpaint(image.astype(np.float64), missing, channel_axis=None)
    return np.where(missing, filled.astype(np.float32), known)


# -------------------------------------------------------------------- translate
def histogram_match(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map ``source`` intensities monotonically onto ``reference``'s histogram.

    Both are ``(z, y, x)`` (shapes may differ); returns float32 with ``source``'s shape.
    """
    match_histograms = _skimage("exposure").match_histograms

    source = _check_3d(source, "histogram_match: source")
    reference = _check_3d(reference, "histogram_match: reference")
    out = match_histograms(source.astype(np.float64), reference.astype(np.float64),
                           channel_axis=None)
    return np.asarray(out, dtype=np.float32)


# ------------------------------------------------------------------------ noise
NOISE_KINDS = ("gaussian", "rician")


def add_noise(image: np.ndarray, kind: str, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Corrupt ``image`` with Gaussian or Rician noise.

    Parameters
    ----------
    image : np.ndarray
        Any shape (``(z, y, x)`` in practice), intensity units.
    kind : {"gaussian", "rician"}
        ``"gaussian"``: ``image + n``; ``"rician"``: ``sqrt((image + n1)^2 + n2^2)``,
        the magnitude of a complex MR signal with noise on both channels
        (Gudbjartsson & Patz 1995, "The Rician distribution of noisy MRI
        data", MRM); needs ``image >= 0``.
    sigma : float
        Standard deviation of each ``n ~ N(0, sigma)``, intensity units.
    rng : np.random.Generator
        Source of the noise.

    Returns
    -------
    np.ndarray
        float32, same shape.
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"add_noise: kind must be one of {NOISE_KINDS}, got {kind!r}")
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"add_noise: sigma must be >= 0, got {sigma!r}")
    image = np.asarray(image, dtype=np.float64)
    if kind == "gaussian":
        return (image + rng.normal(0.0, sigma, image.shape)).astype(np.float32)
    if image.size and image.min() < 0:
        raise ValueError(f"add_noise: kind 'rician' models magnitude images and needs image >= 0, "
                         f"got min {float(image.min()):.4g}")
    real = image + rng.normal(0.0, sigma, image.shape)
    imag = rng.normal(0.0, sigma, image.shape)
    return np.hypot(real, imag).astype(np.float32)


# --------------------------------------------------------------------- registry
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "class-mean lookup": lookup_image,
    "trilinear": upsample_trilinear,
    "cubic B-spline": upsample_bspline,
    "Gaussian smoothing": denoise_gaussian,
    "non-local means": denoise_nlm,
    "biharmonic": inpaint_biharmonic,
    "histogram matching": histogram_match,
}


def get_baseline(name: str) -> Callable[..., Any]:
    """The function behind a name in :data:`BASELINES` (``"class-mean lookup"`` needs
    :func:`fit_class_means` first)."""
    try:
        return _FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"baseline: unknown name {name!r}, "
                         f"expected one of {sorted(_FUNCTIONS)}") from None
