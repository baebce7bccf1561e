"""The set panel of "Synthesize & Compare": set metrics, nearest real, nnU-Net export."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _widget_helpers import add_phantom_layers, error_messages


def _open(viewer):
    return viewer.window.add_plugin_dock_widget("napari-medgan", "Synthesize & Compare")[1]


def _synthesize(qtbot, widget, count: int):
    widget.count.setValue(count)
    widget._on_synthesize()
    qtbot.waitUntil(lambda: widget.synth_btn.isEnabled(), timeout=30_000)


def _set_metrics(qtbot, panel):
    panel._on_set_metrics()
    qtbot.waitUntil(lambda: panel.metrics_btn.isEnabled(), timeout=30_000)


def _wait_loaded(qtbot, widget, path):
    widget.checkpoint.set_path(str(path))
    qtbot.waitUntil(lambda: widget.loaded is not None and widget.loaded[0] == str(path),
                    timeout=30_000)


@pytest.fixture(scope="module")
def joint_checkpoint(tmp_path_factory):
    """Run folder of a 2-step dcgan3d joint (image + label map) run on 16^3 phantoms."""
    from napari_medgan.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from napari_medgan.training.trainer import Trainer

    out = tmp_path_factory.mktemp("joint-run")
    run = RunConfig(
        data=DataConfig(source="phantom", phantom_count=2, phantom_size=16),
        model=ModelConfig(name="dcgan3d", task="joint", patch_size=16, channels=8,
                          latent_dim=16),
        train=TrainConfig(memory_check="off", steps=2, batch_size=2, device="cpu", preview_every=2, seed=0),
        out=str(out),
    )
    for _ in Trainer(run).run():
        pass
    return out


def test_set_metrics_memorization_and_nearest_real(make_napari_viewer, qtbot,
                                                    trained_checkpoint):
    from napari_medgan._widgets._common import add_volume_layer, layer_to_volume

    viewer = make_napari_viewer()
    widget = _open(viewer)
    panel = widget.set_metrics
    real, labels = add_phantom_layers(viewer, seed=5)
    other, _ = add_phantom_layers(viewer, seed=6)  # "head [1]", "head labels [1]"
    widget.checkpoint.set_path(str(trained_checkpoint))
    widget.reference.set_layer(real.name)
    _synthesize(qtbot, widget, 3)
    assert panel.synthetic_layers() == widget.synthetic
    assert panel.real_layers() == [real.name, other.name]

    _set_metrics(qtbot, panel)
    diversity = float(panel.diversity.text().split()[0])
    assert math.isfinite(diversity) and diversity > 0
    assert math.isfinite(float(panel.wasserstein.text())) and float(panel.wasserstein.text()) >= 0
    assert panel.table.rowCount() == 3
    for i, name in enumerate(widget.synthetic):
        assert panel.table.item(i, 0).text() == name
        assert panel.table.item(i, 1).text() in (real.name, other.name)
        assert -1 <= float(panel.table.item(i, 2).text()) <= 1
    assert panel.memorized.text().startswith("0/3")

    # A copy of a real head, as if the widget had synthesized it: flagged, nearest named.
    copy = add_volume_layer(viewer, layer_to_volume(other).with_array(np.array(other.data)),
                            "synthetic_copy", metadata={"medgan_synthetic": {"step": 3}})
    widget.synthetic.append(copy.name)
    assert panel.real_layers() == [real.name, other.name]  # the copy is not a real volume
    _set_metrics(qtbot, panel)
    row = panel.table.rowCount() - 1
    assert panel.table.item(row, 0).text() == "synthetic_copy"
    assert panel.table.item(row, 1).text() == other.name
    assert float(panel.table.item(row, 2).text()) == pytest.approx(1.0, abs=1e-3)
    assert panel.table.item(row, 3).text() == "yes"
    assert panel.memorized.text().startswith("1/4")

    viewer.layers.selection.active = copy
    panel._on_show_nearest()
    assert viewer.canvas.grid.enabled
    assert [ly.name for ly in viewer.layers if ly.visible] == [other.name, copy.name]
    assert copy.contrast_limits == other.contrast_limits
    assert copy.colormap.name == other.colormap.name
    widget._on_side_by_side(False)  # the same toggle leaves the grid and shows the rest
    assert not viewer.canvas.grid.enabled and labels.visible and real.visible

    panel.real_set.setCurrentIndex(1)  # the real reference only: diversity is undefined
    _set_metrics(qtbot, panel)
    assert panel.diversity.text() == "n/a (needs \u22652 real)"
    assert math.isfinite(float(panel.wasserstein.text()))
    assert {panel.table.item(i, 1).text() for i in range(panel.table.rowCount())} == {real.name}


def test_set_metrics_and_nearest_need_inputs(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    panel = _open(viewer).set_metrics
    panel._on_set_metrics()
    panel._on_show_nearest()
    errors = error_messages(notifications)
    assert [e.split(":")[0] for e in errors] == ["Set metrics", "Show nearest real"], errors
    assert panel.metrics_btn.isEnabled() and not viewer.canvas.grid.enabled


def test_export_joint_model_writes_a_valid_dataset(make_napari_viewer, qtbot, tmp_path,
                                                   joint_checkpoint):
    from napari_medgan.export import check_nnunet_dataset

    widget = _open(make_napari_viewer())
    panel = widget.set_metrics
    _wait_loaded(qtbot, widget, joint_checkpoint)
    assert panel.export_btn.isEnabled() and "nnU-Net" in panel.export_btn.toolTip()
    for expected in ("Dataset501_MedGANSynthetic", "Dataset502_MedGANSynthetic"):
        panel._on_export(str(tmp_path), n=2)
        qtbot.waitUntil(lambda: panel.export_btn.isEnabled(), timeout=30_000)
        dataset = tmp_path / expected  # a second export takes the next free ID
        assert check_nnunet_dataset(dataset) == []
        assert len(list((dataset / "imagesTr").iterdir())) == 2
        assert str(dataset) in widget.status.text() and "check: OK" in widget.status.text()


def test_export_needs_image_label_pairs(make_napari_viewer, qtbot, tmp_path, notifications,
                                        trained_checkpoint):
    viewer = make_napari_viewer()
    widget = _open(viewer)
    panel = widget.set_metrics
    _wait_loaded(qtbot, widget, trained_checkpoint)
    # the button cannot work for an image-only model: disabled, and it says why
    assert not panel.export_btn.isEnabled()
    assert "makes images only" in panel.export_btn.toolTip()
    panel._on_export(str(tmp_path), n=2)  # called anyway: one line, nothing written
    errors = error_messages(notifications)
    assert len(errors) == 1 and errors[0].startswith("Export:"), errors
    assert "image + label pairs" in errors[0] and "\n" not in errors[0]
    assert widget.status.text() == errors[0] and not list(tmp_path.iterdir())
    assert not panel.export_btn.isEnabled()
    add_phantom_layers(viewer, seed=5)
    _synthesize(qtbot, widget, 2)  # still usable
    assert len(widget.synthetic) == 2


def test_export_label2image_uses_the_condition_labels(make_napari_viewer, qtbot, tmp_path):
    from napari_medgan.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from napari_medgan.export import check_nnunet_dataset
    from napari_medgan.io import load_volume
    from napari_medgan.training.trainer import Trainer

    run = RunConfig(
        data=DataConfig(source="phantom", phantom_count=2, phantom_size=16),
        model=ModelConfig(name="pix2pix3d", task="label2image", patch_size=16, channels=4),
        train=TrainConfig(memory_check="off", steps=1, batch_size=2, device="cpu", preview_every=1, seed=0),
        out=str(tmp_path / "run"),
    )
    for _ in Trainer(run).run():
        pass
    viewer = make_napari_viewer()
    widget = _open(viewer)
    _, labels = add_phantom_layers(viewer, seed=5)
    _, more = add_phantom_layers(viewer, seed=6)
    _, unused = add_phantom_layers(viewer, seed=7)
    _wait_loaded(qtbot, widget, tmp_path / "run")
    widget.condition.set_layer(labels.name)
    viewer.layers.selection = {labels, more}  # the condition and one more map: two cases
    widget.set_metrics._on_export(str(tmp_path / "raw"))
    qtbot.waitUntil(lambda: widget.set_metrics.export_btn.isEnabled(), timeout=30_000)
    dataset = tmp_path / "raw" / "Dataset501_MedGANSynthetic"
    assert check_nnunet_dataset(dataset) == [], widget.status.text()
    for case, layer in (("syn_000", labels), ("syn_001", more)):
        written = load_volume(dataset / "labelsTr" / f"{case}.nii.gz", is_label=True)
        np.testing.assert_array_equal(written.array, layer.data, err_msg=case)
    assert not (dataset / "labelsTr" / "syn_002.nii.gz").exists()


def test_set_metrics_uses_provenance_and_refuses_mixed_grids(make_napari_viewer, qtbot,
                                                             notifications, trained_checkpoint):
    from napari_medgan._widgets._common import add_volume_layer
    from napari_medgan._widgets._preview import PREVIEW
    from napari_medgan.data.phantom import make_head_phantom
    from napari_medgan.provenance import provenance_metadata

    viewer = make_napari_viewer()
    widget = _open(viewer)
    panel = widget.set_metrics
    real, _ = add_phantom_layers(viewer, seed=5)
    big = make_head_phantom((32, 32, 32), seed=6)[0]  # the same head size on a finer grid
    add_volume_layer(viewer, big, "fine head", metadata=provenance_metadata("real"))
    add_volume_layer(viewer, big, PREVIEW, metadata=provenance_metadata("synthetic", step=3))
    add_volume_layer(viewer, big, "random patch", metadata=provenance_metadata("derived"))
    viewer.add_image(np.zeros((16, 16, 16), np.float32), name="my drawing")  # unknown
    widget.checkpoint.set_path(str(trained_checkpoint))
    _synthesize(qtbot, widget, 2)
    assert panel.real_layers() == [real.name, "fine head"]  # never the preview or the patch
    assert panel.unknown_layers() == ["my drawing"]

    _set_metrics(qtbot, panel)  # 16^3 and 32^3 layers: refused, and it says how to go on
    errors = error_messages(notifications)
    assert len(errors) == 1 and "different grids" in errors[0]
    assert "Resample to one grid" in errors[0] and panel.diversity.text() == "-"

    panel.resample.setChecked(True)
    _set_metrics(qtbot, panel)
    assert len(error_messages(notifications)) == 1
    used = panel.used.text()
    assert f"real: {real.name}, fine head" in used
    assert "synthetic: " + ", ".join(widget.synthetic) in used
    assert "left out (no provenance): my drawing" in used and "resampled" in used
    assert math.isfinite(float(panel.diversity.text().split()[0]))
