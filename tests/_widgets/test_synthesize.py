"""The "Synthesize & Compare" widget: sampling, geometry, side by side, metrics, saving, errors."""

from __future__ import annotations

import numpy as np
from _widget_helpers import add_phantom_layers, error_messages


def _open(viewer):
    return viewer.window.add_plugin_dock_widget("napari-medgan", "Synthesize & Compare")[1]


def _synthesize(qtbot, widget):
    widget._on_synthesize()
    qtbot.waitUntil(lambda: widget.synth_btn.isEnabled(), timeout=30_000)


def test_synthesis_side_by_side_metrics_and_save(make_napari_viewer, qtbot, tmp_path,
                                                 trained_checkpoint):
    from napari_medgan.io import load_volume

    viewer = make_napari_viewer()
    widget = _open(viewer)
    real, _ = add_phantom_layers(viewer, seed=5)
    widget.checkpoint.set_path(str(trained_checkpoint))
    widget.reference.set_layer("head")
    widget.count.setValue(2)
    _synthesize(qtbot, widget)

    assert len(widget.synthetic) == 2
    for name in widget.synthetic:
        layer = viewer.layers[name]
        np.testing.assert_allclose(layer.scale, real.scale)
        np.testing.assert_allclose(layer.translate, real.translate)
        assert layer.metadata["medgan_synthetic"]["step"] == 3
    assert "dcgan3d/synthesis, step 3" in widget.model_info.text()
    assert widget.table.rowCount() == 2
    assert float(widget.table.item(0, 1).text()) > 0  # PSNR in dB
    assert -1 <= float(widget.table.item(0, 2).text()) <= 1  # SSIM

    real.contrast_limits = (0.1, 0.9)
    widget._on_side_by_side(True)
    grid = viewer.canvas.grid
    assert grid.enabled and grid.stride == 1
    assert grid.position(viewer.layers.index(real), viewer.layers) == (0, 0)  # top left
    for name in widget.synthetic:
        assert viewer.layers[name].contrast_limits == real.contrast_limits
        assert viewer.layers[name].colormap.name == real.colormap.name
    assert not viewer.layers["head labels"].visible  # only real + synthetic in the grid
    widget._on_side_by_side(False)
    assert not viewer.canvas.grid.enabled and viewer.layers["head labels"].visible

    viewer.layers.selection.active = viewer.layers[widget.synthetic[0]]
    widget._on_save(str(tmp_path / "sample"))
    saved = load_volume(tmp_path / "sample.nii.gz")
    np.testing.assert_allclose(saved.spacing[::-1], real.scale, rtol=1e-6)
    np.testing.assert_allclose(saved.array, viewer.layers[widget.synthetic[0]].data, atol=1e-5)


def test_same_seed_same_samples_and_default_reference(make_napari_viewer, qtbot,
                                                      trained_checkpoint):
    viewer = make_napari_viewer()
    widget = _open(viewer)
    widget.checkpoint.set_path(str(trained_checkpoint))
    widget.count.setValue(1)
    _synthesize(qtbot, widget)
    first = np.array(viewer.layers[widget.synthetic[0]].data)
    _synthesize(qtbot, widget)
    np.testing.assert_array_equal(first, viewer.layers[widget.synthetic[0]].data)
    assert widget.table.rowCount() == 0  # no real reference chosen: nothing to score


def test_bad_checkpoint_is_reported_and_widget_stays_usable(make_napari_viewer, qtbot, tmp_path,
                                                           notifications, trained_checkpoint):
    viewer = make_napari_viewer()
    widget = _open(viewer)
    empty = tmp_path / "empty"
    empty.mkdir()
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a checkpoint")
    for bad in (empty, text_file):
        notifications.clear()
        widget.checkpoint.set_path(str(bad))
        _synthesize(qtbot, widget)
        errors = error_messages(notifications)
        assert len(errors) == 1 and errors[0].startswith("Synthesize:"), errors
        assert "\n" not in errors[0] and widget.status.text() == errors[0]
    assert not widget.synthetic
    widget.checkpoint.set_path(str(trained_checkpoint))
    _synthesize(qtbot, widget)
    assert widget.synthetic and widget.synthetic[0] in viewer.layers


def test_side_by_side_needs_a_reference(make_napari_viewer, notifications):
    widget = _open(make_napari_viewer())
    widget._on_side_by_side(True)
    assert not widget.viewer.canvas.grid.enabled and not widget.side_btn.isChecked()
    assert error_messages(notifications)
