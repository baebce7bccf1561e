"""The "Reader Study" widget: blinded trial layers, recorded answers, CSV and accuracy."""

from __future__ import annotations

import json

import numpy as np

from napari_medgan.data.phantom import make_head_phantom
from napari_medgan.io import save_volume
from napari_medgan.study import read_study_csv, summary_path


def _open(viewer):
    return viewer.window.add_plugin_dock_widget("napari-medgan", "Reader Study")[1]


def _heads(seeds, noisy=False):
    images = [make_head_phantom((16, 16, 16), seed=s)[0] for s in seeds]
    if noisy:  # "synthetic": the same anatomy model with extra noise
        rng = np.random.default_rng(0)
        images = [v.with_array(v.array + rng.normal(0, 0.1, v.shape).astype(np.float32))
                  for v in images]
    return images


def _trial_layers(viewer, widget):
    return [layer for layer in viewer.layers if layer in widget._layers]


def test_single_mode_study_from_layers(make_napari_viewer, tmp_path):
    from napari_medgan._widgets._common import add_volume_layer

    viewer = make_napari_viewer()
    widget = _open(viewer)
    real, fake = _heads((0, 1)), _heads((10, 11), noisy=True)
    originals = [add_volume_layer(viewer, real[0], "head 0"),
                 add_volume_layer(viewer, real[1], "head 1"),
                 add_volume_layer(viewer, fake[0], "synthetic_000"),
                 add_volume_layer(viewer, fake[1], "sample b", metadata={"medgan_synthetic": True})]
    widget.source.setCurrentText("viewer layers")
    widget.reader.setText("Reader One")
    widget.output.edit.setText(str(tmp_path / "study.csv"))
    widget._on_start()
    assert widget.study is not None and len(widget.study.trials) == 4
    assert not any(layer in viewer.layers for layer in originals)  # no name gives a hint
    limits = set()
    for i in range(4):
        shown = _trial_layers(viewer, widget)
        assert [layer.name for layer in shown] == [f"Trial {i + 1}/4"]
        layer = shown[0]
        text = (layer.name + json.dumps(layer.metadata, default=str)).lower()
        assert "synthetic" not in text and "real" not in text and "head" not in text
        assert layer.colormap.name == "gray" and layer.visible
        assert np.allclose(layer.scale, real[0].napari_scale())
        limits.add(tuple(layer.contrast_limits))
        assert widget.trial_label.text() == f"Trial {i + 1}/4"
        assert len(viewer.layers) == 1
        truth = widget.study.trials[i].truth
        widget.confidence.setValue(4)
        wrong = {"real": "synthetic", "synthetic": "real"}[truth]
        widget._on_answer(truth if i < 3 else wrong)  # 3 of 4 right
    assert len(limits) == 1  # one window for every trial
    assert _trial_layers(viewer, widget) == [] and list(viewer.layers) == originals
    rows = read_study_csv(tmp_path / "study.csv")
    assert len(rows) == 4 and {r["reader"] for r in rows} == {"Reader One"}
    assert [r["correct"] for r in rows] == ["1", "1", "1", "0"]
    assert {r["confidence"] for r in rows} == {"4"} and all(float(r["seconds"]) >= 0 for r in rows)
    assert sorted(r["case_a"] for r in rows) == ["head 0", "head 1", "sample b", "synthetic_000"]
    assert widget.study.results()["accuracy"] == 0.75
    assert "Accuracy 75.0% (95% CI 30.1-95.4%" in widget.result.text()
    assert json.loads(summary_path(tmp_path / "study.csv").read_text())["accuracy"] == 0.75
    assert widget.start_btn.isEnabled() and not widget.answer_btns[0].isEnabled()


def test_2afc_study_from_folders_side_by_side(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget = _open(viewer)
    mine = viewer.add_image(np.zeros((4, 4, 4)), name="my layer")
    for name, vols in (("real", _heads((0, 1, 2))), ("fake", _heads((10, 11, 12), noisy=True))):
        for i, v in enumerate(vols):
            save_volume(v, tmp_path / name / f"case{i}.nii.gz")
    widget.real_dir.set_path(str(tmp_path / "real"))
    widget.synthetic_dir.set_path(str(tmp_path / "fake"))
    widget.mode.setCurrentText("2afc")
    widget.output.set_path(str(tmp_path))  # a folder: the default file name goes in it
    widget._on_start()
    grid = widget._grid()
    assert grid.enabled and [b.text() for b in widget.answer_btns] == ["A is synthetic",
                                                                      "B is synthetic"]
    for i in range(2):
        assert widget.trial_label.text() == f"Trial {i + 1}/3: A on the left, B on the right"
        assert sorted(layer.name for layer in viewer.layers) == ["A", "B"]
        index = {layer.name: list(viewer.layers).index(layer) for layer in viewer.layers}
        assert grid.position(index["A"], viewer.layers) == (0, 0)  # A on the left
        assert grid.position(index["B"], viewer.layers) == (0, 1)
        widget.answer_btns[0].click()  # "A is synthetic"
    widget.stop_btn.click()  # stop early: what was answered is saved
    assert not grid.enabled and list(viewer.layers) == [mine]
    saved = list(tmp_path.glob("medgan_reader_study_anonymous_*.csv"))
    assert len(saved) == 1
    rows = read_study_csv(saved[0])
    assert len(rows) == 3 and [r["answer"] for r in rows] == ["A", "A", ""]
    expected = sum(t.truth == "A" for t in widget.study.trials[:2]) / 2
    assert widget.study.results()["accuracy"] == expected
    assert f"Accuracy {100 * expected:.1f}%" in widget.result.text()
    assert widget.trial_label.text() == "Done: 2 of 3 trials answered."


def test_start_without_volumes_reports_one_line(make_napari_viewer, notifications):
    from _widget_helpers import error_messages

    viewer = make_napari_viewer()
    widget = _open(viewer)
    widget._on_start()
    assert widget.study is None
    assert error_messages(notifications) == [
        "Reader study: choose a folder of real and a folder of synthetic volumes"]
