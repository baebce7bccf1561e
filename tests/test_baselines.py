"""Classical baselines: each does its job on a small phantom-like volume, and refuses bad input."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation
import pytest
from scipy import ndimage

from napari_medgan.baselines import (
    BASELINES,
    add_noise,
    denoise_gaussian,
    denoise_nlm,
    estimate_noise_sigma,
    fit_class_means,
    get_baseline,
    histogram_match,
    inpaint_biharmonic,
    lookup_image,
    upsample_bspline,
    upsample_trilinear,
)
from napari_medgan.data.superres import downsample_volume
from napari_medgan.io.volume import Volume

OBLIQUE = Rotation.from_euler("xyz", [12, -20, 35], degrees=True).as_matrix()

N = 24


def _grid(n: int = N):
    """Voxel coordinates centred on the volume, each ``(n, n, n)`` in ``(z, y, x)`` order."""
    return np.mgrid[:n, :n, :n].astype(np.float64) - (n - 1) / 2


def _sphere(n: int = N) -> np.ndarray:
    """A blurred bright sphere on a dark background: smooth, with an edge."""
    z, y, x = _grid(n)
    hard = (np.sqrt(x**2 + y**2 + z**2) < 7).astype(np.float64) * 100.0
    return ndimage.gaussian_filter(hard, 1.5)


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))




def _centres(volume: Volume) -> np.ndarray:
    """LPS centre of every voxel, ``(Z, Y, X, 3)`` with the last axis (x, y, z)."""
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in volume.shape], indexing="ij")
    ijk = np.stack([i, j, k], axis=-1) * volume.spacing
    return volume.origin + ijk @ volume.direction.T


# --------------------------------------------------------------- label2image
def test_registry_names_resolve_to_functions():
    assert set(BASELINES) == {"label2image", "superres", "denoise", "inpaint", "translate"}
    for names in BASELINES.values():
        for name in names:
            assert callable(get_baseline(name))
    with pytest.raises(ValueError, match="unknown name 'bicubic'"):
        get_baseline("bicubic")


def test_lookup_reproduces_a_piecewise_constant_image_exactly():
    rng = np.random.default_rng(0)
    values = np.array([0.0, 37.5, -12.25, 880.0], dtype=np.float32)
    labels = [rng.integers(0, 4, size=(8, 9, 10)) for _ in range(3)]
    images = [values[lab] for lab in labels]
    means = fit_class_means(images, labels, num_classes=5)  # class 4 never occurs
    assert means.shape == (5,) and means.dtype == np.float32
    np.testing.assert_array_equal(means[:4], values)
    overall = np.mean(np.concatenate([im.ravel() for im in images]))
    np.testing.assert_allclose(means[4], overall, rtol=1e-6)
    out = lookup_image(labels[1], means)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, images[1])


def test_lookup_refuses_out_of_range_labels():
    means = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="max label 7"):
        lookup_image(np.full((2, 2, 2), 7), means)
    with pytest.raises(ValueError, match=">= 0"):
        lookup_image(np.full((2, 2, 2), -1), means)
    with pytest.raises(ValueError, match="integer labels"):
        lookup_image(np.full((2, 2, 2), 0.5), means)


def test_fit_class_means_refuses_bad_pairs():
    img, lab = np.zeros((4, 4, 4)), np.zeros((4, 4, 4), int)
    with pytest.raises(ValueError, match="max label 3"):
        fit_class_means([img], [lab + 3], num_classes=3)
    with pytest.raises(ValueError, match=r"image shape \(4, 4, 4\) but label shape \(4, 4, 5\)"):
        fit_class_means([img], [np.zeros((4, 4, 5), int)], num_classes=2)
    with pytest.raises(ValueError, match="1 images and 0 label maps"):
        fit_class_means([img], [], num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        fit_class_means([img], [lab], num_classes=0)


# ------------------------------------------------------------------ superres
@pytest.mark.parametrize(
    "geometry",
    [dict(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3)),
     dict(spacing=(0.9, 1.1, 1.3), origin=(4.0, -7.5, 12.0), direction=OBLIQUE)],
    ids=["axis-aligned", "oblique"],
)
@pytest.mark.parametrize("factors", [(2, 2, 2), (1, 1, 4)], ids=["2x2x2", "1x1x4"])
def test_bspline_is_on_the_trilinear_grid_and_at_least_as_accurate(factors, geometry):
    """Sample a quadratic of the physical position on the LR grid, compare at HR centres."""
    hr_grid = Volume(np.zeros((48, 24, 24), np.float32), **geometry)
    lr = downsample_volume(hr_grid, factors)  # only for its grid
    centre = _centres(hr_grid).mean(axis=(0, 1, 2))

    def quadratic(p):
        q = (p - centre) / 10.0
        return 20.0 * q[..., 0] ** 2 - 15.0 * q[..., 1] * q[..., 2] + 8.0 * q[..., 2] ** 2 + 5.0

    lr = lr.with_array(quadratic(_centres(lr)).astype(np.float32))
    spline, linear = upsample_bspline(lr, factors), upsample_trilinear(lr, factors)
    assert spline.shape == linear.shape == hr_grid.shape
    assert spline.array.dtype == np.float32
    np.testing.assert_allclose(spline.spacing, linear.spacing, atol=1e-12)
    np.testing.assert_allclose(spline.origin, linear.origin, atol=1e-12)
    np.testing.assert_allclose(spline.direction, linear.direction, atol=1e-12)
    np.testing.assert_allclose(spline.origin, hr_grid.origin, atol=1e-9)

    truth = quadratic(_centres(spline))
    # The mirror extension is not quadratic; its effect on the spline decays by ~0.27 per LR
    # voxel (the cubic B-spline prefilter pole 2 - sqrt(3)), so compare four LR voxels away
    # from every border.
    inner = tuple(slice(4 * f, -4 * f) for f in factors[::-1])
    err_spline = np.abs(spline.array[inner] - truth[inner]).max()
    err_linear = np.abs(linear.array[inner] - truth[inner]).max()
    assert err_linear > 1e-3  # the function really is curved at this sampling
    assert err_spline <= err_linear
    assert err_spline < 0.1 * err_linear  # cubic splines reproduce quadratics


# ------------------------------------------------------------------- denoise
@pytest.mark.parametrize("method", [denoise_gaussian, denoise_nlm], ids=["gaussian", "nlm"])
def test_denoisers_reduce_the_error_of_a_noisy_phantom(method):
    clean = _sphere()
    noisy = add_noise(clean, "gaussian", 10.0, np.random.default_rng(1))
    out = method(noisy)
    assert out.shape == clean.shape and out.dtype == np.float32
    assert _rmse(out, clean) < 0.5 * _rmse(noisy, clean)


def test_nlm_with_a_given_sigma_and_on_a_constant_image():
    clean = _sphere()
    noisy = add_noise(clean, "gaussian", 10.0, np.random.default_rng(2))
    assert _rmse(denoise_nlm(noisy, sigma=10.0), clean) < 0.5 * _rmse(noisy, clean)
    flat = np.full((8, 8, 8), 3.0)
    np.testing.assert_array_equal(denoise_nlm(flat), flat.astype(np.float32))
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        denoise_nlm(noisy, sigma=-1.0)
    with pytest.raises(ValueError, match="sigma_vox must be > 0"):
        denoise_gaussian(noisy, sigma_vox=0.0)


@pytest.mark.parametrize("sigma", [2.0, 10.0])
def test_estimate_noise_sigma_finds_the_noise_level(sigma):
    noisy = _sphere() + np.random.default_rng(3).normal(0.0, sigma, (N, N, N))
    assert estimate_noise_sigma(noisy) == pytest.approx(sigma, rel=0.1)


# ------------------------------------------------------------------- inpaint
def test_biharmonic_fills_a_hole_in_a_smooth_function():
    z, y, x = _grid()
    smooth = (np.sin(x / 6.0) * np.cos(y / 7.0) + 0.1 * z).astype(np.float32) * 50.0
    mask = np.zeros(smooth.shape, np.uint8)
    mask[9:15, 8:14, 10:16] = 1
    damaged = np.where(mask > 0, np.float32(1e4), smooth)  # garbage under the mask must not leak
    out = inpaint_biharmonic(damaged, mask)
    assert out.dtype == np.float32
    hole = mask > 0
    assert np.array_equal(out[~hole].view(np.uint32), smooth[~hole].view(np.uint32))
    err = np.abs(out[hole] - smooth[hole]).max()
    assert err < 0.02 * np.ptp(smooth)


def test_biharmonic_with_nothing_missing_and_bad_masks():
    img = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    np.testing.assert_array_equal(inpaint_biharmonic(img, np.zeros_like(img)), img)
    with pytest.raises(ValueError, match="does not match"):
        inpaint_biharmonic(img, np.zeros((3, 3, 4)))
    with pytest.raises(ValueError, match="every voxel is masked"):
        inpaint_biharmonic(img, np.ones_like(img))


# ----------------------------------------------------------------- translate
def test_histogram_match_is_monotone_and_matches_the_reference():
    rng = np.random.default_rng(4)
    source = _sphere() + rng.normal(0.0, 1.0, (N, N, N))
    reference = np.exp(rng.normal(3.0, 0.5, (20, 22, 18)))  # different shape and distribution
    out = histogram_match(source, reference)
    assert out.shape == source.shape and out.dtype == np.float32
    order = np.argsort(source, axis=None)
    assert np.all(np.diff(out.ravel()[order].astype(np.float64)) >= 0)
    qs = np.linspace(0.05, 0.95, 10)
    np.testing.assert_allclose(np.quantile(out, qs), np.quantile(reference, qs), rtol=0.02)


# --------------------------------------------------------------------- noise
def test_rician_noise_on_zero_has_the_rayleigh_bias():
    sigma = 3.0
    out = add_noise(np.zeros((32, 32, 32)), "rician", sigma, np.random.default_rng(5))
    assert out.dtype == np.float32 and out.min() >= 0
    assert out.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.02)


def test_gaussian_noise_is_unbiased_with_the_given_sigma():
    image = np.full((32, 32, 32), 50.0)
    out = add_noise(image, "gaussian", 4.0, np.random.default_rng(6))
    assert out.mean() == pytest.approx(50.0, abs=0.1)
    assert out.std() == pytest.approx(4.0, rel=0.02)


def test_add_noise_refuses_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="kind 'rician'.*image >= 0"):
        add_noise(np.full((4, 4, 4), -1.0), "rician", 1.0, rng)
    with pytest.raises(ValueError, match="kind must be one of"):
        add_noise(np.zeros((4, 4, 4)), "poisson", 1.0, rng)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        add_noise(np.zeros((4, 4, 4)), "gaussian", -1.0, rng)
