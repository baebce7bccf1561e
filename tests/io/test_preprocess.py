"""reorient_to_ras and resample_to_spacing keep voxels where they are in the patient."""

from __future__ import annotations

import numpy as np
import pytest
from io_helpers import OBLIQUE

from napari_medgan.io import Volume, VolumeError, reorient_to_ras, resample_to_spacing
from napari_medgan.io.volume import orientation_code


def _positions(vol: Volume) -> np.ndarray:
    """LPS position (mm) of every voxel, in array (z, y, x) order, shape (N, 3)."""
    k, j, i = np.indices(vol.shape).reshape(3, -1)
    ijk1 = np.stack([i, j, k, np.ones_like(i)]).astype(np.float64)
    return (vol.affine_lps() @ ijk1)[:3].T


@pytest.mark.parametrize(
    "direction",
    [np.eye(3), np.diag([-1.0, 1.0, -1.0]), np.eye(3)[[2, 0, 1]], OBLIQUE],
    ids=["LPS", "RPI", "permuted", "oblique"],
)
def test_reorient_to_ras_keeps_every_voxel_at_its_position(direction):
    shape = (4, 5, 6)
    vol = Volume(
        np.arange(np.prod(shape), dtype=np.int32).reshape(shape),  # unique values track voxels
        spacing=(0.5, 1.5, 3.0),
        origin=(10.0, -20.0, 5.0),
        direction=direction,
        is_label=True,
    )
    ras = reorient_to_ras(vol)
    assert orientation_code(ras.direction) == "RAS"
    assert ras.is_label and ras.array.dtype == np.int32
    old = _positions(vol)[np.argsort(vol.array.ravel())]
    new = _positions(ras)[np.argsort(ras.array.ravel())]
    np.testing.assert_allclose(new, old, atol=1e-9)


def test_resample_image_keeps_origin_direction_and_extent(oblique_image):
    out = resample_to_spacing(oblique_image, (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(out.spacing, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(out.origin, oblique_image.origin)
    np.testing.assert_allclose(out.direction, oblique_image.direction)
    old_extent = np.array(oblique_image.shape[::-1]) * oblique_image.spacing
    new_extent = np.array(out.shape[::-1]) * out.spacing
    assert np.all(np.abs(new_extent - old_extent) <= out.spacing / 2 + 1e-9)
    assert out.array.dtype == np.float32 and not out.is_label
    lo, hi = oblique_image.array.min(), oblique_image.array.max()
    assert lo - 1e-3 <= out.array.min() and out.array.max() <= hi + 1e-3  # linear: no overshoot


def test_resample_to_the_same_spacing_is_the_identity(oblique_image):
    out = resample_to_spacing(oblique_image, oblique_image.spacing)
    np.testing.assert_allclose(out.array, oblique_image.array, atol=1e-4)


def test_resample_labels_nearest_keeps_dtype_and_label_set():
    labels = np.zeros((12, 14, 16), np.uint8)
    labels[2:8, 3:10, 4:12] = 3
    labels[5:11, 8:13, 9:15] = 7
    vol = Volume(labels, spacing=(0.8, 0.8, 1.6), direction=OBLIQUE, is_label=True)
    out = resample_to_spacing(vol, 1.1)
    assert out.is_label and out.array.dtype == np.uint8
    assert set(np.unique(out.array)) == {0, 3, 7}
    up = resample_to_spacing(vol, 0.4)
    assert up.shape == (48, 28, 32) and set(np.unique(up.array)) == {0, 3, 7}


@pytest.mark.parametrize("spacing", [0, -1.0, (1.0, np.nan, 1.0), (1.0, 2.0)])
def test_resample_bad_spacing(oblique_image, spacing):
    with pytest.raises(VolumeError, match="oblique: spacing must be 3 positive numbers"):
        resample_to_spacing(oblique_image, spacing)
