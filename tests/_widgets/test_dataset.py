"""The "Dataset" widget: layer/folder/phantom sources, volume info, a random training patch."""

from __future__ import annotations

import numpy as np
from _widget_helpers import add_phantom_layers, error_messages


def _open(viewer):
    return viewer.window.add_plugin_dock_widget("napari-medgan", "Dataset")[1]


def test_layers_are_listed_and_described(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = _open(viewer)
    add_phantom_layers(viewer)
    assert [widget.images.item(i).text() for i in range(widget.images.count())] == ["head"]
    assert widget.labels.count() == 1
    widget.source.setCurrentText("layers")
    widget.images.select(["head"])
    widget.labels.select(["head labels"])
    d = widget.session.dataset
    assert (d.source, d.image_layers, d.label_layers) == ("layers", ["head"], ["head labels"])
    widget._on_describe()
    text = widget.info.toPlainText()
    assert "head: shape (16, 16, 16)" in text and "LPS" in text and "range [" in text
    assert "labels" in text.splitlines()[1]


def test_show_random_patch_from_the_phantom(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _open(viewer)
    widget.count.setValue(2)
    widget.size.setValue(16)
    widget.patch.setValue(16)
    widget._on_show_patch()
    qtbot.waitUntil(lambda: "random patch" in viewer.layers, timeout=30_000)
    layer = viewer.layers["random patch"]
    assert layer.data.shape == (16, 16, 16)
    spacing = widget._cache[1].reference.spacing  # the phantom's spacing, z-y-x in napari
    np.testing.assert_allclose(layer.scale, spacing[::-1])
    assert layer.data.max() > 0.5  # inverse-normalised: MR phantom units, not [-1, 1]


def test_joint_patch_from_layers_adds_labels(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _open(viewer)
    add_phantom_layers(viewer)
    widget.session.model_name, widget.session.task = "dcgan3d", "joint"
    widget.source.setCurrentText("layers")
    widget.images.select(["head"])
    widget.labels.select(["head labels"])
    widget.patch.setValue(16)
    widget._on_show_patch()
    qtbot.waitUntil(lambda: "random patch labels" in viewer.layers, timeout=30_000)
    assert viewer.layers["random patch labels"].data.max() >= 1
    np.testing.assert_allclose(viewer.layers["random patch"].scale, viewer.layers["head"].scale)


def test_missing_layer_selection_is_an_error_not_a_crash(make_napari_viewer, notifications):
    widget = _open(make_napari_viewer())
    widget.source.setCurrentText("layers")
    widget._on_show_patch()
    assert any("no image layer selected" in m for m in error_messages(notifications))
    assert widget.patch_btn.isEnabled()


def test_phantom_description_runs_in_a_thread(make_napari_viewer, qtbot):
    widget = _open(make_napari_viewer())
    widget.size.setValue(16)
    widget._on_describe()
    qtbot.waitUntil(lambda: "phantom" in widget.info.toPlainText(), timeout=30_000)
    assert "shape (16, 16, 16)" in widget.info.toPlainText()


def test_a_hostile_file_in_the_folder_is_one_notification(make_napari_viewer, qtbot, tmp_path,
                                                          notifications):
    import gzip

    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((20000, 20000, 20000))
    header.set_data_dtype(np.float32)
    (tmp_path / "scans").mkdir()
    bomb = tmp_path / "scans" / "huge.nii.gz"
    bomb.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4096))
    widget = _open(make_napari_viewer())
    widget.source.setCurrentText("folder")
    widget.folder.set_path(str(tmp_path / "scans"))
    widget._on_describe()
    qtbot.waitUntil(lambda: bool(error_messages(notifications)), timeout=30_000)
    (error,) = error_messages(notifications)
    assert "huge.nii.gz: header claims 20000x20000x20000 voxels" in error and "\n" not in error


def test_dataset_settings_are_remembered_but_not_the_layers_picked(make_napari_viewer,
                                                                   dock_settings):
    from napari_medgan._widgets import _remember

    viewer = make_napari_viewer()
    add_phantom_layers(viewer)
    first = _open(viewer)
    first.source.setCurrentText("folder")
    first.folder.edit.setText("/data/heads")
    first.count.setValue(12)
    first.modality.setCurrentText("ct")
    first.patch.setValue(48)
    first.images.item(0).setSelected(True)
    _remember.flush()

    _remember._STORE = None  # a new session reads the file again
    second_viewer = make_napari_viewer()
    add_phantom_layers(second_viewer)
    second = _open(second_viewer)
    assert second.source.currentText() == "folder" and second.folder.path() == "/data/heads"
    assert second.count.value() == 12 and second.modality.currentText() == "ct"
    assert second.patch.value() == 48 and not second.images.selected()
    # the session (what Train GAN builds its run from) holds the remembered values
    d = second.session.dataset
    assert (d.source, d.folder, d.phantom_modality, d.patch_size) == (
        "folder", "/data/heads", "ct", 48)
