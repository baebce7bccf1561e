"""Model bundles in napari: dropping a bundle (zip or folder) opens it in Synthesize & Compare."""

from __future__ import annotations

import numpy as np
import pytest

DOCK = ("napari-medgan", "Synthesize & Compare")


@pytest.fixture(scope="module")
def bundle_zip(trained_checkpoint, tmp_path_factory):
    from napari_medgan.export_model import export_model

    return export_model(trained_checkpoint, tmp_path_factory.mktemp("bundles") / "heads.zip")


def _dock_names(viewer) -> list[str]:
    return list(viewer.window._wrapped_dock_widgets)


def test_dropping_a_bundle_zip_opens_it_in_the_synthesize_dock(make_napari_viewer, qtbot,
                                                               bundle_zip):
    from napari_medgan.training.inference import generate, load_generator

    viewer = make_napari_viewer()
    assert not any("Synthesize" in n for n in _dock_names(viewer))
    # plugin=None is what a drop does (QtViewer._qt_open): a .zip has one reader, ours
    added = viewer.open(str(bundle_zip), plugin=None)
    assert added == [] and len(viewer.layers) == 0  # a model, not a layer
    widget = viewer.window.add_plugin_dock_widget(*DOCK)[1]  # the dock the drop opened
    assert sum("Synthesize" in n for n in _dock_names(viewer)) == 1
    assert widget.checkpoint.path() == str(bundle_zip)
    qtbot.waitUntil(lambda: widget.loaded is not None, timeout=30_000)
    assert "dcgan3d/synthesis, step 3" in widget.model_info.text()

    widget.count.setValue(2)
    widget.seed.setValue(4)
    widget._on_synthesize()
    qtbot.waitUntil(lambda: widget.synth_btn.isEnabled(), timeout=30_000)
    assert len(widget.synthetic) == 2
    expected, _ = generate(load_generator(bundle_zip, device="cpu"), 2, seed=4)
    for name, vol in zip(widget.synthetic, expected):
        assert np.array_equal(viewer.layers[name].data, vol.array)
        assert viewer.layers[name].metadata["medgan_synthetic"]["checkpoint"] == str(bundle_zip)


def test_dropping_a_bundle_folder_reuses_the_open_dock(make_napari_viewer, qtbot,
                                                       trained_checkpoint, tmp_path):
    from napari_medgan.export_model import export_model

    folder = export_model(trained_checkpoint, tmp_path / "heads")
    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget(*DOCK)[1]
    # a folder is also offered to napari's own reader: the drop asks, the user picks ours
    assert viewer.open(str(folder), plugin="napari-medgan") == []
    assert sum("Synthesize" in n for n in _dock_names(viewer)) == 1
    assert widget.checkpoint.path() == str(folder)
    qtbot.waitUntil(lambda: widget.loaded is not None, timeout=30_000)
    assert widget.loaded[1].path == folder


def test_picker_says_it_takes_bundles_and_a_bad_bundle_is_one_line(make_napari_viewer, qtbot,
                                                                   bundle_zip, tmp_path):
    import json
    import shutil
    import zipfile

    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget(*DOCK)[1]
    assert "bundle" in widget.checkpoint.toolTip() and "*.zip" in widget.checkpoint.filter
    assert "bundle" in widget.checkpoint.edit.placeholderText()

    bad = tmp_path / "bad.zip"
    shutil.copy(bundle_zip, tmp_path / "src.zip")
    with zipfile.ZipFile(tmp_path / "src.zip") as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("models/model.json"):
                data = json.dumps({**json.loads(data), "format_version": 2}).encode()
            dst.writestr(name, data)
    widget.checkpoint.set_path(str(bad))
    qtbot.waitUntil(lambda: widget.model_info.text().startswith("cannot load"), timeout=30_000)
    text = widget.model_info.text()
    assert "\n" not in text and "model.json" in text and "format_version" in text
