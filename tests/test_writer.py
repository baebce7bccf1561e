"""The npe2 writers: layers saved from a real viewer read back with the same geometry."""

from __future__ import annotations

import numpy as np

from napari_medgan._writer import write_image, write_labels
from napari_medgan.io import Volume, load_volume, save_volume
from napari_medgan.io.volume import GEOMETRY_KEY

PLUGIN = "napari-medgan"


def _oblique() -> np.ndarray:
    a, b = np.deg2rad(25.0), np.deg2rad(-15.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _volume(**changes) -> Volume:
    array = np.random.default_rng(0).normal(size=(7, 9, 11)).astype(np.float32)
    kwargs = dict(spacing=(0.8, 1.2, 2.5), origin=(5.0, -7.5, 30.0), direction=_oblique())
    kwargs.update(changes)
    return Volume(array, **kwargs)


def _same_geometry(a: Volume, b: Volume, tol: float = 1e-4) -> None:
    np.testing.assert_allclose(a.spacing, b.spacing, atol=tol)
    np.testing.assert_allclose(a.origin, b.origin, atol=tol)
    np.testing.assert_allclose(a.direction, b.direction, atol=tol)


def test_layer_save_round_trip_every_format(make_napari_viewer, tmp_path):
    vol = _volume()
    src = save_volume(vol, tmp_path / "src.nii.gz")
    viewer = make_napari_viewer()  # one viewer for all formats: viewers are the slow part
    (layer,) = viewer.open(str(src), plugin=PLUGIN)
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        out = tmp_path / f"saved{suffix}"
        written = layer.save(str(out), plugin=PLUGIN)
        assert written == [str(out)]
        back = load_volume(out)
        _same_geometry(back, vol)
        np.testing.assert_array_equal(back.array, vol.array)


def test_write_image_from_layer_data_tuple_without_our_metadata(make_napari_viewer, tmp_path):
    # A layer napari made itself: geometry must come from scale/translate/affine.
    vol = _volume()
    kwargs = vol.to_layer_kwargs()
    viewer = make_napari_viewer()
    layer = viewer.add_image(
        vol.array, scale=kwargs["scale"], translate=kwargs["translate"], affine=kwargs["affine"]
    )
    data, attributes, layer_type = layer.as_layer_data_tuple()
    assert layer_type == "image" and GEOMETRY_KEY not in attributes["metadata"]
    (path,) = write_image(str(tmp_path / "made_in_napari.nrrd"), data, attributes)
    back = load_volume(path)
    _same_geometry(back, vol)
    np.testing.assert_array_equal(back.array, vol.array)


def test_labels_layer_saved_through_the_layer_list(make_napari_viewer, tmp_path):
    labels = _volume().with_array(
        np.random.default_rng(1).integers(0, 9, size=(7, 9, 11)).astype(np.int32), is_label=True
    )
    src = save_volume(labels, tmp_path / "organs.nii.gz")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(src), plugin=PLUGIN)
    assert layer._type_string == "labels"
    layer.data[0, 0, 0] = 5  # a user edit must be saved too
    out = tmp_path / "edited.mha"
    written = viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    assert written == [str(out)]
    back = load_volume(out)
    assert back.is_label and back.array.dtype == np.int32
    np.testing.assert_array_equal(back.array, np.asarray(layer.data))
    _same_geometry(back, labels)


def test_default_suffix_is_nii_gz(tmp_path):
    vol = _volume(direction=np.eye(3))
    kwargs = vol.to_layer_kwargs()
    (path,) = write_labels(
        str(tmp_path / "mask"),
        (vol.array > 0).astype(np.uint8),
        {
            "metadata": kwargs["metadata"],
            "scale": kwargs["scale"],
            "translate": kwargs["translate"],
        },
    )
    assert path == str(tmp_path / "mask.nii.gz")
    back = load_volume(path)
    assert back.is_label
    _same_geometry(back, vol)


def test_preference_makes_plugin_the_default_reader(make_napari_viewer, tmp_path):
    """As docs/io.md says: set settings.plugins.extension2reader; plugin=None is the GUI path."""
    from napari.settings import get_settings

    path = save_volume(_volume(), tmp_path / "pref.nii.gz")
    viewer = make_napari_viewer()
    settings = get_settings().plugins
    saved = dict(settings.extension2reader)
    try:
        settings.extension2reader = {**saved, "*.nii.gz": PLUGIN}
        (layer,) = viewer.open(str(path), plugin=None)
    finally:
        settings.extension2reader = saved
    assert layer.name == "pref"
    np.testing.assert_allclose(layer.scale, _volume().napari_scale(), atol=1e-5)
