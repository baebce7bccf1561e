"""Super-resolution operator: physical correctness of the LR/HR grids, shapes, bad input.

The geometry tests sample a linear function of the *physical* (LPS) position:
a box average of a linear function equals its value at the box centre, and
trilinear interpolation reproduces a linear function exactly, so every value
checks that a grid sits where its geometry says it does.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation
import pytest
import torch

from napari_medgan.data.superres import (
    crop_to_multiple,
    degrade,
    downsample,
    downsample_volume,
    factors_zyx,
    highres_geometry,
    lowres_geometry,
    parse_factors,
    upsample,
    upsample_volume,
)
from napari_medgan.io.volume import Volume

OBLIQUE = Rotation.from_euler("xyz", [12.0, -20.0, 35.0], degrees=True).as_matrix()

# a . p + b, p in LPS mm (x, y, z)
SLOPE = np.array([0.7, -1.3, 0.45])
OFFSET = 3.0




GEOMETRIES = {
    "axis-aligned": dict(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3)),
    "oblique": dict(spacing=(0.9, 1.1, 1.3), origin=(-12.5, 30.25, 7.0),
                    direction=OBLIQUE),
}
FACTORS = [(2, 2, 2), (4, 4, 4), (1, 1, 4)]


def _centres(shape_zyx, spacing, origin, direction) -> np.ndarray:
    """LPS centre of every voxel, shape ``(Z, Y, X, 3)`` with the last axis (x, y, z)."""
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape_zyx], indexing="ij")
    ijk = np.stack([i, j, k], axis=-1) * np.asarray(spacing)
    return np.asarray(origin) + ijk @ np.asarray(direction).T


def _linear(points: np.ndarray) -> np.ndarray:
    return points @ SLOPE + OFFSET


def _linear_volume(shape_zyx, geometry) -> Volume:
    values = _linear(_centres(shape_zyx, **geometry)).astype(np.float32)
    return Volume(values, source="hr.nii.gz", **geometry)


def _centres_of(volume: Volume) -> np.ndarray:
    return _centres(volume.shape, volume.spacing, volume.origin, volume.direction)


# ----------------------------------------------------------------- geometry
@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
@pytest.mark.parametrize("factors", FACTORS, ids=lambda f: "x".join(map(str, f)))
def test_downsample_volume_puts_lr_voxels_at_their_physical_centres(factors, geometry):
    # sizes not divisible by 4 on purpose: downsample_volume must crop the end
    hr = _linear_volume((18, 17, 21), geometry)
    lr = downsample_volume(hr, factors)
    fz, fy, fx = factors_zyx(factors)
    assert lr.shape == (18 // fz, 17 // fy, 21 // fx)
    assert lr.array.dtype == np.float32
    assert lr.source == "hr.nii.gz"
    np.testing.assert_allclose(lr.spacing, np.asarray(geometry["spacing"]) * factors)
    np.testing.assert_allclose(lr.direction, geometry["direction"], atol=1e-12)
    np.testing.assert_allclose(lr.array, _linear(_centres_of(lr)), atol=2e-4)


@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
@pytest.mark.parametrize("factors", FACTORS, ids=lambda f: "x".join(map(str, f)))
def test_upsample_volume_returns_to_the_hr_grid_and_is_exact_inside(factors, geometry):
    hr = crop_to_multiple(_linear_volume((18, 17, 21), geometry), factors)
    up = upsample_volume(downsample_volume(hr, factors), factors)
    assert up.shape == hr.shape
    np.testing.assert_allclose(up.spacing, hr.spacing, atol=1e-6)
    np.testing.assert_allclose(up.origin, hr.origin, atol=1e-6)
    np.testing.assert_allclose(up.direction, hr.direction, atol=1e-6)
    f = max(factors)
    inner = (slice(f, -f),) * 3
    expected = _linear(_centres_of(hr))
    np.testing.assert_allclose(up.array[inner], expected[inner], atol=2e-4)


@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
@pytest.mark.parametrize("factors", FACTORS, ids=lambda f: "x".join(map(str, f)))
def test_highres_geometry_inverts_lowres_geometry(factors, geometry):
    hr = Volume(np.zeros((8, 8, 8), np.float32), **geometry)
    lr = Volume(np.zeros(tuple(n // f for n, f in zip(hr.shape, factors_zyx(factors)))),
                **lowres_geometry(hr, factors))
    shape, back = highres_geometry(lr, factors)
    assert shape == hr.shape
    np.testing.assert_allclose(back["spacing"], hr.spacing, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back["origin"], hr.origin, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back["direction"], hr.direction, rtol=0, atol=1e-9)


def test_x2_lr_centre_is_half_a_millimetre_from_the_first_thin_voxel():
    """x2 at 1 mm: the thick centre is the mean of thin centres 0 and 1 on each axis."""
    hr = Volume(np.zeros((4, 4, 4), np.float32), spacing=(1, 1, 1), origin=(10.0, -5.0, 2.0))
    lr = downsample_volume(hr, (2, 2, 2))
    np.testing.assert_allclose(lr.origin, [10.5, -4.5, 2.5])
    np.testing.assert_allclose(lr.spacing, [2.0, 2.0, 2.0])
    up = upsample_volume(lr, (2, 2, 2))
    np.testing.assert_allclose(up.origin - lr.origin, [-0.5, -0.5, -0.5])
    np.testing.assert_allclose(up.origin, hr.origin)
    np.testing.assert_allclose(np.linalg.norm(lr.origin - hr.origin), np.sqrt(3) / 2)


def test_oblique_origin_shift_follows_the_direction_cosines():
    geo = GEOMETRIES["oblique"]
    hr = Volume(np.zeros((8, 8, 8), np.float32), **geo)
    lr = lowres_geometry(hr, (1, 1, 4))
    # only k (z) is thickened: the shift is 1.5 thin slices along the third column
    expected = np.asarray(geo["origin"]) + geo["direction"][:, 2] * 1.5 * geo["spacing"][2]
    np.testing.assert_allclose(lr["origin"], expected, atol=1e-12)
    np.testing.assert_allclose(lr["spacing"], [0.9, 1.1, 5.2])


def test_crop_to_multiple_keeps_the_first_voxel_and_geometry():
    geo = GEOMETRIES["oblique"]
    vol = Volume(np.arange(9 * 10 * 11, dtype=np.float32).reshape(9, 10, 11), **geo)
    out = crop_to_multiple(vol, (4, 2, 1))  # x, y, z
    assert out.shape == (9, 10, 8)
    np.testing.assert_array_equal(out.array, vol.array[:, :, :8])
    np.testing.assert_array_equal(out.origin, vol.origin)
    np.testing.assert_array_equal(out.spacing, vol.spacing)


def test_crop_to_multiple_rejects_an_axis_shorter_than_its_factor():
    vol = Volume(np.zeros((3, 8, 8), np.float32), source="thin.nii.gz")
    with pytest.raises(ValueError, match=r"thin\.nii\.gz.*\(3, 8, 8\)"):
        crop_to_multiple(vol, (1, 1, 4))


def test_label_maps_are_refused():
    vol = Volume(np.zeros((4, 4, 4), np.uint8), is_label=True, source="seg.nii.gz")
    with pytest.raises(ValueError, match="seg.nii.gz is a label map"):
        downsample_volume(vol, (2, 2, 2))
    with pytest.raises(ValueError, match="label map"):
        upsample_volume(vol, (2, 2, 2))


# ------------------------------------------------------------------- tensors
@pytest.mark.parametrize(
    "shape, factors_zyx_, lr_shape",
    [
        ((2, 1, 8, 8, 8), (2, 2, 2), (2, 1, 4, 4, 4)),
        ((1, 3, 16, 8, 12), (4, 4, 4), (1, 3, 4, 2, 3)),
        ((2, 1, 16, 6, 10), (4, 1, 1), (2, 1, 4, 6, 10)),
    ],
)
def test_downsample_upsample_degrade_shapes(shape, factors_zyx_, lr_shape):
    hr = torch.randn(shape)
    lr = downsample(hr, factors_zyx_)
    assert tuple(lr.shape) == lr_shape
    assert tuple(upsample(lr, factors_zyx_).shape) == shape
    out = degrade(hr, factors_zyx_)
    assert out.shape == hr.shape and out.dtype == hr.dtype


def test_downsample_is_the_block_mean():
    hr = torch.randn(1, 1, 8, 4, 6, dtype=torch.float64)
    lr = downsample(hr, (4, 2, 1))
    expected = hr[0, 0].numpy().reshape(2, 4, 2, 2, 6, 1).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(lr[0, 0].numpy(), expected, atol=1e-12)


def test_degrade_keeps_a_constant():
    hr = torch.full((1, 1, 8, 8, 8), 0.25)
    torch.testing.assert_close(degrade(hr, (2, 2, 2)), hr)


def test_downsample_rejects_indivisible_shapes():
    with pytest.raises(ValueError, match=r"\(9, 8, 8\).*not divisible"):
        downsample(torch.zeros(1, 1, 9, 8, 8), (2, 2, 2))


@pytest.mark.parametrize("func", [downsample, upsample, degrade])
def test_tensor_functions_reject_non_5d_input(func):
    with pytest.raises(ValueError, match=r"5-D tensor \(B, C, D, H, W\), got shape \(8, 8, 8\)"):
        func(torch.zeros(8, 8, 8), (2, 2, 2))


# -------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "value, expected",
    [
        (2, (2, 2, 2)),
        (4, (4, 4, 4)),
        ("2", (2, 2, 2)),
        ("1x1x4", (1, 1, 4)),
        ("1,1,4", (1, 1, 4)),
        (" 2 x 2 x 1 ", (2, 2, 1)),
        ((1, 1, 4), (1, 1, 4)),
        ([4, 2, 1], (4, 2, 1)),
        (np.array([2, 2, 4]), (2, 2, 4)),
    ],
)
def test_parse_factors_accepts(value, expected):
    assert parse_factors(value) == expected


@pytest.mark.parametrize(
    "value",
    [1, 3, 0, -2, 2.0, True, "1x1x1", (1, 1, 1), "3", "2x2", "2x2x2x2", "1;1;4", "", "abc",
     (2, 2), (2, 2, 8), (2.0, 2, 2), None],
)
def test_parse_factors_rejects(value):
    with pytest.raises(ValueError, match=r"model\.superres_factors: expected .* got"):
        parse_factors(value)


def test_factors_zyx_reverses():
    assert factors_zyx((1, 2, 4)) == (4, 2, 1)
    with pytest.raises(ValueError, match="factors_xyz"):
        factors_zyx((2, 2))


@pytest.mark.parametrize("mode", ["cubic", "bspline"])
@pytest.mark.parametrize("fac", [(2, 2, 2), (4, 1, 1), (1, 4, 2)])
def test_cubic_upsampling_beats_trilinear_on_smooth_signals(fac, mode):
    """Tricubic convolution and the cubic B-spline keep constants, and on a smooth signal
    sampled thick both are closer to the thin truth than trilinear, on the same grid."""
    shape = tuple(8 * f for f in fac)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    hr = torch.from_numpy(np.sin(z / 5.0) + np.cos(y / 6.0) * np.sin(x / 7.0)).float()
    hr = hr[None, None]
    low = downsample(hr, fac)
    inner = (0, 0, *(slice(2 * f, -2 * f) for f in fac))
    err_cubic = (upsample(low, fac, mode=mode) - hr)[inner].abs().mean()
    err_linear = (upsample(low, fac, mode="trilinear") - hr)[inner].abs().mean()
    assert err_cubic < 0.8 * err_linear
    const = torch.full((1, 1, 4, 4, 4), 2.5)
    torch.testing.assert_close(upsample(const, fac, mode=mode),
                               torch.full((1, 1, *(4 * f for f in fac)), 2.5))
    with pytest.raises(ValueError, match="mode"):
        upsample(low, fac, mode="nearest")


@pytest.mark.parametrize("shape, fac", [((6, 7, 9), (4, 2, 1)), ((12, 5, 6), (2, 2, 2)),
                                        ((4, 4, 4), (4, 4, 4)), ((5, 16, 16), (4, 1, 1))])
def test_torch_bspline_is_scipys_bspline(shape, fac):
    """The network's estimate (torch convolutions, truncated prefilter) is the benchmark's
    B-spline baseline (scipy's exact recursive prefilter) on the same grid, borders included."""
    from scipy import ndimage

    from napari_medgan.data.superres import ESTIMATE_MODE

    a = np.random.default_rng(3).normal(size=shape)
    ref = ndimage.zoom(a, fac, order=3, mode="grid-mirror", grid_mode=True)
    out = upsample(torch.from_numpy(a)[None, None], fac, mode="bspline")[0, 0].numpy()
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-4)
    assert ESTIMATE_MODE == "bspline"
    hr = torch.from_numpy(np.random.default_rng(4).normal(size=tuple(n * f for n, f in
                                                                     zip(shape, fac))))[None, None]
    torch.testing.assert_close(degrade(hr, fac), upsample(downsample(hr, fac), fac, "bspline"))
    vol = Volume(a.astype(np.float32), spacing=(2.0, 3.0, 1.5), origin=(1.0, -2.0, 4.0))
    mine, scipys = (upsample_volume(vol, fac[::-1], mode=m) for m in ("bspline", "scipy-bspline"))
    np.testing.assert_array_equal(mine.spacing, scipys.spacing)
    np.testing.assert_array_equal(mine.origin, scipys.origin)
    np.testing.assert_allclose(mine.array, scipys.array, atol=1e-4)
