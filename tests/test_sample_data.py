"""File > Open Sample: the phantoms and the real T1 open with their physical geometry."""

from __future__ import annotations

import os

import numpy as np

from napari_medgan._sample_data import (
    CT_WINDOW,
    make_phantom_ct_sample,
    make_phantom_sample,
    make_t1_sample,
)


def test_sample_commands_return_layer_tuples():
    for make, names in ((make_phantom_sample, ("image", "labels")),
                        (make_phantom_ct_sample, ("image", "labels")),
                        (make_t1_sample, ("image",))):
        layers = make()
        assert tuple(kind for _, _, kind in layers) == names
        for data, kwargs, _ in layers:
            assert data.ndim == 3 and "scale" in kwargs and "name" in kwargs
    (ct, ct_kw, _), (ct_lab, _, _) = make_phantom_ct_sample()
    (_, _, _), (mr_lab, _, _) = make_phantom_sample()
    np.testing.assert_array_equal(ct_lab, mr_lab)  # one head, two contrasts
    assert tuple(ct_kw["contrast_limits"]) == CT_WINDOW and ct.min() < -900 and ct.max() > 500
    t1, t1_kw, _ = make_t1_sample()[0]
    lo, hi = t1_kw["contrast_limits"]
    assert t1.min() <= lo < hi <= t1.max()


def test_open_phantom_sample_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medgan", "head_phantom")
    assert [layer._type_string for layer in viewer.layers] == ["image", "labels"]
    image, labels = viewer.layers
    expected = image.metadata["medgan_geometry"]["spacing"][::-1]  # (x, y, z) -> (z, y, x)
    np.testing.assert_allclose(image.scale, expected)
    np.testing.assert_allclose(labels.scale, expected)
    np.testing.assert_allclose(image.scale, [230 / 96] * 3)
    # the grid is centred on (0, 0, 0) mm
    centre = image.data_to_world(np.array(image.data.shape) / 2 - 0.5)
    np.testing.assert_allclose(centre, 0, atol=1e-6)
    assert labels.data.dtype == np.uint8 and set(np.unique(labels.data)) == set(range(8))


def test_open_ct_sample_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medgan", "head_phantom_ct")
    image = viewer.layers[0]
    assert tuple(image.contrast_limits) == CT_WINDOW
    assert image.data.max() > 500  # HU: the skull


def test_open_t1_sample_keeps_nibabel_geometry(make_napari_viewer):
    import nibabel as nib
    import nibabel.testing

    path = os.path.join(nibabel.testing.data_path, "anatomical.nii")
    nii = nib.load(path)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medgan", "t1_head")
    (layer,) = viewer.layers
    assert layer.data.shape == nii.shape[::-1]  # (x, y, z) file -> (z, y, x)
    np.testing.assert_allclose(layer.scale, nii.header.get_zooms()[::-1])
    # any voxel lands where nibabel's affine puts it (RAS -> LPS, napari world is (z, y, x))
    ijk = np.array([5, 7, 3])
    ras = nii.affine @ np.append(ijk, 1.0)
    lps = ras[:3] * np.array([-1, -1, 1])
    world = layer.data_to_world(ijk[::-1])
    np.testing.assert_allclose(world, lps[::-1], atol=1e-5)
    assert layer.colormap.name == "gray"
