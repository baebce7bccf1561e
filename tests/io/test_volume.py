"""The geometry contract itself: LPS/RAS, napari layer placement, layer -> volume."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from napari_medgan.io.volume import Volume, VolumeError, orientation_code


def _oblique():
    rot = Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix()
    return Volume(np.arange(60, dtype=np.float32).reshape(3, 4, 5), spacing=(0.5, 1.0, 2.0),
                  origin=(10.0, -20.0, 30.0), direction=rot)


def test_ras_affine_is_lps_flipped():
    vol = _oblique()
    np.testing.assert_allclose(np.diag([-1, -1, 1, 1]) @ vol.affine_lps(), vol.affine_ras())
    again = Volume.from_affine(vol.array, vol.affine_ras(), "RAS")
    np.testing.assert_allclose(again.spacing, vol.spacing)
    np.testing.assert_allclose(again.origin, vol.origin)
    np.testing.assert_allclose(again.direction, vol.direction, atol=1e-12)


@pytest.mark.parametrize("oblique", [False, True])
def test_napari_layer_places_voxels_at_their_physical_position(oblique):
    from napari.layers import Image

    vol = _oblique() if oblique else Volume(np.zeros((3, 4, 5)), spacing=(0.5, 1, 2),
                                            origin=(1, 2, 3))
    kwargs = vol.to_layer_kwargs()
    layer = Image(vol.array, **{k: kwargs[k] for k in ("scale", "translate", "affine")
                                if k in kwargs})
    for k, j, i in [(0, 0, 0), (2, 3, 4), (1, 2, 3)]:
        physical = (vol.affine_lps() @ np.array([i, j, k, 1.0]))[:3]
        np.testing.assert_allclose(layer.data_to_world((k, j, i)), physical[::-1], atol=1e-9)
    back = Volume.from_layer_data(vol.array, None, layer.scale, layer.translate,
                                  layer.affine.affine_matrix)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-9)


def test_layer_edits_win_over_stored_geometry():
    vol = Volume(np.zeros((3, 4, 5)), spacing=(0.5, 1, 2), origin=(1, 2, 3))
    kw = vol.to_layer_kwargs()
    same = Volume.from_layer_data(vol.array, kw["metadata"], kw["scale"], kw["translate"])
    np.testing.assert_array_equal(same.origin, vol.origin)
    moved = Volume.from_layer_data(vol.array, kw["metadata"], kw["scale"], (10.0, 2.0, 1.0))
    np.testing.assert_allclose(moved.origin, (1.0, 2.0, 10.0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(array=np.zeros((4, 4))), "3D"),
        (dict(array=np.zeros((0, 4, 4))), "empty"),
        (dict(array=np.zeros((2, 2, 2)), spacing=(1, 0, 1)), "spacing"),
        (dict(array=np.zeros((2, 2, 2)), direction=np.zeros((3, 3))), "singular"),
        (dict(array=np.zeros((2, 2, 2)), origin=(0, np.nan, 0)), "origin"),
    ],
)
def test_bad_volumes_are_rejected(kwargs, message):
    with pytest.raises(VolumeError, match=message):
        Volume(**kwargs, source="case.nii.gz")


def test_orientation_codes():
    assert orientation_code(np.eye(3)) == "LPS"
    assert orientation_code(np.diag([-1, -1, 1])) == "RAS"
