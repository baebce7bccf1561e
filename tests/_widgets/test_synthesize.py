"""The "Synthesize & Compare" widget: sampling, geometry, side by side, metrics, saving, errors."""

from __future__ import annotations

import numpy as np
import pytest
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
    assert not widget.side_btn.isEnabled() and "synthesize first" in widget.side_btn.toolTip()
    assert not widget.save_all_btn.isEnabled()
    _synthesize(qtbot, widget)
    assert widget.side_btn.isEnabled() and "Not available" not in widget.side_btn.toolTip()
    assert widget.save_all_btn.isEnabled()

    assert len(widget.synthetic) == 2
    bar = widget.progress_bar  # napari's activity dock followed the two samples
    assert (bar.n, bar.total, bar.desc) == (2, 2, "Synthesizing")
    for name in widget.synthetic:
        layer = viewer.layers[name]
        np.testing.assert_allclose(layer.scale, real.scale)
        np.testing.assert_allclose(layer.translate, real.translate)
        assert layer.metadata["medgan_synthetic"]["step"] == 3
    assert "dcgan3d/synthesis, step 3" in widget.model_info.text()
    assert widget.show_baseline.isHidden() and not widget.baselines  # unconditional: no baseline
    assert widget.table.rowCount() == 2
    assert float(widget.table.item(0, 1).text()) > 0  # PSNR in dB
    assert -1 <= float(widget.table.item(0, 2).text()) <= 1  # SSIM

    real.contrast_limits, real.colormap = (0.1, 0.9), "gray"
    first, second = (viewer.layers[n] for n in widget.synthetic)
    first.colormap, first.contrast_limits = "magma", (0.2, 0.4)  # the user's own look
    second.visible = False
    order = [ly.name for ly in viewer.layers]
    looks = {ly.name: (ly.colormap.name, tuple(ly.contrast_limits)) for ly in (first, second)}
    assert order.index("head") < order.index(first.name)  # the reference is not at the bottom
    viewer.layers.move(order.index("head"), len(order))  # ... nor at the top
    order = [ly.name for ly in viewer.layers]
    widget._on_side_by_side(True)
    grid = viewer.canvas.grid
    assert grid.enabled and grid.stride == 1
    assert grid.position(viewer.layers.index(real), viewer.layers) == (0, 0)  # top left
    for name in widget.synthetic:
        assert viewer.layers[name].contrast_limits == real.contrast_limits
        assert viewer.layers[name].colormap.name == real.colormap.name
        assert viewer.layers[name].visible and viewer.layers[name].name_overlay.visible
    assert real.name_overlay.visible  # each cell is labelled with its layer's name
    assert not viewer.layers["head labels"].visible  # only real + synthetic in the grid
    widget._on_side_by_side(False)
    assert not viewer.canvas.grid.enabled and viewer.layers["head labels"].visible
    # the user's layers as they were: order, colormaps, contrast, visibility, no labels
    assert [ly.name for ly in viewer.layers] == order
    assert {ly.name: (ly.colormap.name, tuple(ly.contrast_limits))
            for ly in (first, second)} == looks
    assert first.visible and not second.visible
    assert not any(ly.name_overlay.visible for ly in viewer.layers)

    viewer.layers.selection.active = viewer.layers[widget.synthetic[0]]
    widget._on_save(str(tmp_path / "sample"))
    saved = load_volume(tmp_path / "sample.nii.gz")
    np.testing.assert_allclose(saved.spacing[::-1], real.scale, rtol=1e-6)
    np.testing.assert_allclose(saved.array, viewer.layers[widget.synthetic[0]].data, atol=1e-5)

    # every synthetic layer at once, safe names, nothing overwritten, provenance beside them
    import json
    import os

    widget._on_save_all(str(tmp_path / "all"))
    widget._on_save_all(str(tmp_path / "all"))  # again: new names, the first files stay
    files = sorted(os.listdir(tmp_path / "all"))
    assert files == ["synthetic.json", "synthetic_000_step_3.nii.gz",
                     "synthetic_000_step_3_2.nii.gz", "synthetic_001_step_3.nii.gz",
                     "synthetic_001_step_3_2.nii.gz"], files
    manifest = json.loads((tmp_path / "all" / "synthetic.json").read_text())
    assert [m["layer"] for m in manifest] == widget.synthetic
    assert all(m["provenance"]["step"] == 3 for m in manifest)
    again = load_volume(tmp_path / "all" / "synthetic_001_step_3.nii.gz")
    np.testing.assert_allclose(again.array, viewer.layers[widget.synthetic[1]].data, atol=1e-5)
    np.testing.assert_allclose(again.origin, saved.origin, atol=1e-4)


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


def _damaged_copy(run, target, edit_state=None, poison=False):
    """A copy of ``run``'s latest checkpoint with its state edited or its EMA weights NaN."""
    import json
    import shutil

    import safetensors.torch

    from napari_medgan.training.checkpoint import load_checkpoint

    shutil.copytree(load_checkpoint(run).path, target)
    doc = json.loads((target / "state.json").read_text())
    if edit_state:
        edit_state(doc["state"])
    if poison:
        weights = safetensors.torch.load_file(target / "weights.safetensors")
        for key in weights:
            if key.startswith("ema.") and weights[key].is_floating_point():
                weights[key].fill_(float("nan"))
        safetensors.torch.save_file(weights, target / "weights.safetensors")
        doc["weights_bytes"] = (target / "weights.safetensors").stat().st_size
    (target / "state.json").write_text(json.dumps(doc))
    return target


@pytest.mark.parametrize(("damage", "said"), [
    (dict(poison=True), "holds NaN or infinite weights"),
    (dict(edit_state=lambda s: s["model_config"].update(channels=100000)), "model.channels"),
    (dict(edit_state=lambda s: s.pop("geometry")), "state has no 'geometry' field"),
])
def test_a_damaged_checkpoint_is_one_notification_naming_it(
        make_napari_viewer, qtbot, tmp_path, notifications, trained_checkpoint, damage, said):
    viewer = make_napari_viewer()
    widget = _open(viewer)
    bad = _damaged_copy(trained_checkpoint, tmp_path / "bad", **damage)
    widget.checkpoint.set_path(str(bad))
    _synthesize(qtbot, widget)
    errors = error_messages(notifications)
    assert len(errors) == 1 and str(bad) in errors[0] and said in errors[0], errors
    assert not widget.synthetic and len(viewer.layers) == 0


def test_side_by_side_needs_a_reference(make_napari_viewer, notifications):
    widget = _open(make_napari_viewer())
    widget._on_side_by_side(True)
    assert not widget.viewer.canvas.grid.enabled and not widget.side_btn.isChecked()
    assert error_messages(notifications)


# ------------------------------------------------- conditional models next to their baselines
@pytest.fixture(scope="module")
def superres_model(tmp_path_factory):
    """(run folder, LoadedModel) of a 2-step x2 super-resolution run on 32^3 phantoms."""
    from napari_medgan.config import RunConfig
    from napari_medgan.training.inference import load_generator
    from napari_medgan.training.trainer import Trainer

    out = tmp_path_factory.mktemp("superres") / "run"
    run = RunConfig.from_dict({
        "model": {"name": "pix2pix3d", "task": "superres", "patch_size": 16, "channels": 4,
                  "superres_factors": [2, 2, 2]},
        "data": {"phantom_count": 2, "phantom_size": 32},
        "train": {"steps": 2, "batch_size": 1, "preview_every": 100, "checkpoint_every": 100,
                  "device": "cpu"},
        "out": str(out)})
    for _ in Trainer(run).run():
        pass
    return str(out), load_generator(out, device="cpu")


def _superres_viewer(make_napari_viewer, superres_model, reference="head HR"):
    """A viewer with an HR phantom and its x2 LR version, the superres model loaded, LR as
    the condition and ``reference`` as the real reference."""
    from napari_medgan._widgets._common import add_volume_layer
    from napari_medgan.data.phantom import make_head_phantom
    from napari_medgan.data.superres import downsample_volume

    viewer = make_napari_viewer()
    widget = _open(viewer)
    from napari_medgan.provenance import provenance_metadata

    hr, _ = make_head_phantom((32, 32, 32), seed=3)
    real = provenance_metadata("real", source="head phantom")  # as if opened from files
    add_volume_layer(viewer, hr, "head HR", metadata=real)
    add_volume_layer(viewer, downsample_volume(hr, (2, 2, 2)), "head LR", metadata=real)
    widget.reset_choices()
    path, loaded = superres_model
    widget.checkpoint.edit.setText(path)  # no editingFinished: the model is already loaded
    widget._on_loaded((path, loaded))
    widget.condition.set_layer("head LR")
    widget.reference.set_layer(reference)
    return viewer, widget


def _cells(widget, column):
    return [widget.table.item(i, column).text() for i in range(widget.table.rowCount())]


def test_superres_shows_and_scores_the_classical_baselines(make_napari_viewer, qtbot,
                                                           notifications, superres_model):
    from napari_medgan import evaluation
    from napari_medgan._widgets._common import layer_to_volume
    from napari_medgan._widgets._synthesize import SYNTHETIC_KEY, is_baseline_layer

    viewer, widget = _superres_viewer(make_napari_viewer, superres_model)
    assert not widget.show_baseline.isHidden() and widget.show_baseline.isChecked()
    assert "trilinear" in widget.show_baseline.toolTip()
    assert "cubic B-spline" in widget.show_baseline.toolTip()
    _synthesize(qtbot, widget)
    assert not error_messages(notifications), widget.status.text()

    hr, lr = viewer.layers["head HR"], viewer.layers["head LR"]
    assert len(widget.synthetic) == 1 and not is_baseline_layer(viewer.layers[widget.synthetic[0]])
    assert widget.baselines == ["head LR \u00b7 trilinear (baseline)",
                                "head LR \u00b7 cubic B-spline (baseline)"]
    for name in widget.synthetic + widget.baselines:  # all on the HR grid, placed like it
        layer = viewer.layers[name]
        assert layer.data.shape == hr.data.shape
        np.testing.assert_allclose(layer.scale, hr.scale)
        np.testing.assert_allclose(layer.translate, hr.translate)
    tag = viewer.layers[widget.baselines[0]].metadata[SYNTHETIC_KEY]
    assert tag["baseline"] == "trilinear" and tag["condition"] == "head LR"
    assert "baseline" not in viewer.layers[widget.synthetic[0]].metadata[SYNTHETIC_KEY]

    # one row per method, against the HR layer, and the trilinear row is the core's figure
    assert widget.table.rowCount() == 3
    methods = _cells(widget, 0)
    assert methods[1:] == ["trilinear (baseline)", "cubic B-spline (baseline)"]
    psnr = [float(t) for t in _cells(widget, 1)]
    assert all(np.isfinite(psnr)) and all(-1 <= float(t) <= 1 for t in _cells(widget, 2))
    assert "head HR" in widget.against.text()
    ref, cond = layer_to_volume(hr), layer_to_volume(lr)
    direct = evaluation.judge(ref, evaluation.compute_baselines(superres_model[1], cond))
    assert psnr[1] == pytest.approx(direct["trilinear"]["PSNR"], abs=0.006)
    assert psnr[2] == pytest.approx(direct["cubic B-spline"]["PSNR"], abs=0.006)
    assert abs(psnr[0] - psnr[1]) < 0.5  # an untrained residual net starts at trilinear

    hr.contrast_limits = (0.1, 0.9)
    widget._on_side_by_side(True)
    grid, layers = viewer.canvas.grid, viewer.layers
    assert grid.enabled and not lr.visible
    cells = [grid.position(layers.index(n), layers) for n in ["head HR", *widget.synthetic,
                                                              *widget.baselines]]
    assert cells == [(0, 0), (0, 1), (1, 0), (1, 1)]  # reference, model, then the baselines
    for name in widget.synthetic + widget.baselines:
        assert layers[name].contrast_limits == hr.contrast_limits
        assert layers[name].colormap.name == hr.colormap.name
    widget._on_side_by_side(False)
    assert lr.visible

    # set metrics: the baselines are neither synthetic samples nor real volumes
    assert widget.set_metrics.synthetic_layers() == widget.synthetic
    assert sorted(widget.set_metrics.real_layers()) == ["head HR", "head LR"]


def test_baseline_unchecked_gives_the_model_row_only(make_napari_viewer, qtbot, superres_model):
    viewer, widget = _superres_viewer(make_napari_viewer, superres_model)
    widget.show_baseline.setChecked(False)
    _synthesize(qtbot, widget)
    assert len(widget.synthetic) == 1 and widget.baselines == []
    assert not [ly for ly in viewer.layers if "(baseline)" in ly.name]
    assert widget.table.rowCount() == 1 and float(_cells(widget, 1)[0]) > 0


def test_result_on_another_grid_reads_na_with_the_reason(make_napari_viewer, qtbot,
                                                         notifications, superres_model):
    viewer, widget = _superres_viewer(make_napari_viewer, superres_model, reference="head LR")
    _synthesize(qtbot, widget)  # the results are on the HR grid, the reference on the LR one
    assert len(widget.baselines) == 2 and widget.table.rowCount() == 3
    for column in (1, 2, 3):
        assert _cells(widget, column) == ["n/a"] * 3
    status = widget.status.text()
    assert "n/a for 3 result(s)" in status and "does not match" in status and "\n" not in status
    assert not error_messages(notifications)


def test_flip_ensemble_box_chooses_one_pass_or_the_average_of_eight(make_napari_viewer, qtbot,
                                                                    superres_model):
    from napari_medgan._widgets._common import layer_to_volume
    from napari_medgan.training.inference import synthesize_from

    viewer, widget = _superres_viewer(make_napari_viewer, superres_model)
    assert not widget.flip_ensemble.isHidden() and widget.flip_ensemble.isChecked()
    assert "8 flips" in widget.flip_ensemble.toolTip()
    cond = layer_to_volume(viewer.layers["head LR"])
    for checked in (True, False):
        widget.flip_ensemble.setChecked(checked)
        widget.show_baseline.setChecked(False)
        _synthesize(qtbot, widget)
        expected = synthesize_from(superres_model[1], cond, flip_ensemble=checked)
        np.testing.assert_allclose(viewer.layers[widget.synthetic[0]].data, expected.array,
                                   atol=1e-7, rtol=0)
    one, eight = (synthesize_from(superres_model[1], cond, flip_ensemble=f).array
                  for f in (False, True))
    assert np.abs(one - eight).max() > 1e-5  # the settings differ, far beyond the tolerance


def test_a_pair_models_image_stage_draws_the_image_for_a_label_layer(make_napari_viewer, qtbot,
                                                                     tmp_path):
    """A two-stage pair model shows "Image from labels": with a label layer chosen, Synthesize
    draws that map's image (stage 2) in its geometry; with none, it draws pairs."""
    from napari_medgan.config import RunConfig
    from napari_medgan.training.inference import load_generator, synthesize_from
    from napari_medgan._widgets._common import layer_to_volume
    from napari_medgan.training.trainer import Trainer

    out = tmp_path / "run"
    run = RunConfig.from_dict({
        "model": {"name": "twostage3d", "task": "joint", "patch_size": 16, "channels": 4,
                  "latent_dim": 8},
        "data": {"phantom_count": 2, "phantom_size": 16},
        "train": {"steps": 2, "batch_size": 2, "preview_every": 100, "checkpoint_every": 100,
                  "device": "cpu"},
        "out": str(out)})
    list(Trainer(run).run())
    viewer = make_napari_viewer()
    widget = _open(viewer)
    _, labels = add_phantom_layers(viewer, seed=5)
    loaded = load_generator(out, device="cpu")
    widget.checkpoint.edit.setText(str(out))
    widget._on_loaded((str(out), loaded))
    assert not widget.stage_labels.isHidden() and widget.condition.isHidden()
    widget.reset_choices()
    widget.stage_labels.set_layer("head labels")
    _synthesize(qtbot, widget)
    assert len(widget.synthetic) == 1
    layer = viewer.layers[widget.synthetic[0]]
    np.testing.assert_allclose(layer.scale, labels.scale)
    expected = synthesize_from(loaded, layer_to_volume(labels))
    np.testing.assert_allclose(layer.data, expected.array, rtol=1e-5, atol=1e-5)

    widget.stage_labels.set_layer(None)  # no label layer: pairs from noise
    widget.count.setValue(2)
    _synthesize(qtbot, widget)
    assert len(widget.synthetic) == 4  # two images and their label maps
