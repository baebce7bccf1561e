"""The "Train GAN" widget drives the package's Trainer in a napari thread_worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from _widget_helpers import configure_tiny, error_messages

from napari_medgan._widgets._common import session_for
from napari_medgan._widgets._run import cpu_training_threads
from napari_medgan.training import events as ev

PLUGIN = "napari-medgan"


def _open(viewer, name):
    return viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]


def _wait_idle(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: widget.run is None, timeout=timeout)


def _is_checkpoint(path) -> bool:
    path = Path(path)
    return (path / "state.json").is_file() and (path / "weights.safetensors").is_file()


def test_importing_widgets_does_not_import_torch():
    code = ("import sys, napari_medgan._widgets as w; w.TrainWidget; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_widgets_open_by_manifest_name(make_napari_viewer):
    from napari_medgan._widgets import DatasetWidget, SynthesizeWidget, TrainWidget

    viewer = make_napari_viewer()
    for name, cls in (("Dataset", DatasetWidget), ("Train GAN", TrainWidget),
                      ("Synthesize & Compare", SynthesizeWidget)):
        assert isinstance(_open(viewer, name), cls)


def test_task_choices_follow_model(make_napari_viewer):
    widget = _open(make_napari_viewer(), "Train GAN")
    widget.model.setCurrentText("pix2pix3d")
    tasks = [widget.task.itemText(i) for i in range(widget.task.count())]
    assert tasks == ["label2image", "translate", "denoise", "superres", "inpaint"]
    assert (widget.session.model_name, widget.session.task) == ("pix2pix3d", "label2image")
    assert re.fullmatch(r"CPU: \d+ training thread\(s\) on \d+ core\(s\)",
                        widget.device_info.text())


def test_whole_volume_fields_follow_the_model(make_napari_viewer, tmp_path):
    widget = _open(make_napari_viewer(), "Train GAN")
    configure_tiny(widget, tmp_path / "run", steps=2)
    assert not widget.volume.isEnabled() and not widget.slab.isEnabled()  # dcgan3d: patches
    widget.model.setCurrentText("hagan3d")
    assert widget.volume.isEnabled() and widget.slab.isEnabled()
    assert "multiple of 32" in widget.volume.toolTip()  # the CLI's help, declared once
    widget.volume.setText("64, 32,32")
    widget.slab.setValue(16)
    run = widget.build_run()
    assert run.model.volume_shape == (64, 32, 32) and run.model.slab_size == 16
    widget.volume.setText("64,30,32")
    widget._on_start()
    assert widget.run is None and "model.volume_shape" in widget.status.text()
    widget.model.setCurrentText("dcgan3d")
    assert widget.build_run().model.volume_shape is None


def test_the_label_grid_is_offered_for_the_two_stage_model_only(make_napari_viewer, tmp_path):
    widget = _open(make_napari_viewer(), "Train GAN")
    configure_tiny(widget, tmp_path / "run", steps=2)
    assert not widget.label_scale.isEnabled()  # dcgan3d
    widget.model.setCurrentText("twostage3d")
    assert widget.label_scale.isEnabled() and "stage 1" in widget.label_scale.toolTip()
    widget.label_scale.setValue(2)
    assert widget.build_run().model.label_scale == 2
    widget.model.setCurrentText("dcgan3d")
    assert widget.build_run().model.label_scale == 1  # the field is twostage3d's alone


def test_tiny_training_runs_to_the_end(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = _open(viewer, "Train GAN")
    synth = _open(viewer, "Synthesize & Compare")
    configure_tiny(widget, tmp_path / "run", steps=4, preview_every=2)
    widget.memory_check.setCurrentText("on")
    previews, kinds, messages = [], [], []

    def record(event):  # connected after the widget's own slot, so the layer is updated
        kinds.append(type(event))
        if isinstance(event, ev.MessageEvent):
            messages.append(event.text)
        if isinstance(event, ev.PreviewEvent):
            previews.append(event.volumes[0].array)

    widget._on_start()
    run = widget.run
    process = run.trainer  # the run's TrainingProcess: the trainer runs in a child
    assert run is not None and not widget.start_btn.isEnabled()
    assert viewer.layers["GAN preview"].metadata["medgan_placeholder"]  # added at Start
    # in mm from the start: one layer without units takes them off napari's axes
    assert [str(u) for u in viewer.layers["GAN preview"].units] == ["millimeter"] * 3
    run.worker.yielded.connect(record)
    assert not widget.progress.isHidden() and widget.progress.maximum() == 4
    _wait_idle(qtbot, widget)

    assert kinds.count(ev.StepEvent) == 4 and kinds[-1] is ev.DoneEvent
    # planned before the networks were built: the estimate against this machine's RAM
    assert any(m.startswith("memory: fits: ~") and "available RAM" in m for m in messages)
    assert len(previews) == 2
    assert not np.allclose(previews[0], previews[-1])
    preview = viewer.layers["GAN preview"]
    assert preview.data.shape == (16, 16, 16)
    assert _is_checkpoint(widget.checkpoint)
    assert widget.session.checkpoint == widget.checkpoint
    assert synth.checkpoint.path() == widget.checkpoint  # the next widget is ready to sample
    assert "medgan_placeholder" not in preview.metadata
    qtbot.waitUntil(lambda: preview.visible, timeout=5_000)  # shown a turn after its data
    assert np.array_equal(preview.data, previews[-1])  # the last preview is what shows
    # losses are read (one host sync) at log and preview intervals: steps 2 and 4 here
    assert widget.plot.data["G"][0] == [2, 4] and widget.plot.draws >= 1
    # the dock's bar counts steps, not events; napari's activity dock holds no bar for it
    qtbot.waitUntil(lambda: widget.progress.value() == 4, timeout=5_000)
    assert getattr(run.worker, "pbar", None) is None
    assert process.threads == cpu_training_threads()  # one core left for the viewer
    assert process.pid != os.getpid() and process.exitcode == 0
    assert widget.start_btn.isEnabled() and not widget.stop_btn.isEnabled()


def test_preview_placeholders_leave_the_users_selection_alone(make_napari_viewer, qtbot):
    """Start adds hidden preview layers; napari would select them and show their controls
    in place of the layer the user is working on (and repaint for it mid-click)."""
    from napari_medgan._widgets._preview import PREVIEW, Turns, add_placeholders, show_preview
    from napari_medgan.config import ModelConfig
    from napari_medgan.io import Volume

    viewer = make_napari_viewer()
    other = viewer.add_image(np.zeros((8, 8, 8), np.float32), name="other", units=("mm",) * 3)
    mine = viewer.add_image(np.ones((8, 8, 8), np.float32), name="mine", units=("mm",) * 3)
    viewer.layers.selection.active = mine
    add_placeholders(viewer, ModelConfig(task="joint", patch_size=16))
    names = {layer.name for layer in viewer.layers}
    assert {PREVIEW, f"{PREVIEW} labels"} <= names and other in viewer.layers
    assert viewer.layers.selection == {mine} and viewer.layers.selection.active is mine
    rng = np.random.default_rng(0)

    def preview(step):
        image = rng.random((16, 16, 16)).astype(np.float32)
        return (Volume(image, spacing=(2.0, 2.0, 2.0), origin=(4.0, 0.0, -2.0)),
                Volume((image > 0.5).astype(np.uint8), spacing=(2.0, 2.0, 2.0),
                       origin=(4.0, 0.0, -2.0), is_label=True))

    turns, done = Turns(), []
    first, later = preview(2), preview(3)
    show_preview(viewer, ev.PreviewEvent(step=2, volumes=[first[0]], labels=[first[1]]),
                 turns=turns, then=lambda: done.append(2))
    shown = [viewer.layers[PREVIEW], viewer.layers[f"{PREVIEW} labels"]]
    # one piece per turn of the event loop: only the image's new spacing is in so far
    assert tuple(shown[0].scale) == (2.0, 2.0, 2.0) and tuple(shown[1].scale) == (1, 1, 1)
    assert not shown[0].data.any() and not any(layer.visible for layer in shown)
    # a newer preview replaces the older one's waiting pieces: its data is what stays
    show_preview(viewer, ev.PreviewEvent(step=3, volumes=[later[0]], labels=[later[1]]),
                 turns=turns, then=lambda: done.append(3))
    assert done == []
    qtbot.waitUntil(lambda: all(layer.visible for layer in shown) and not turns.pieces,
                    timeout=5_000)
    qtbot.waitUntil(lambda: done == [2, 3], timeout=5_000)  # a turn after the last piece
    for layer, volume in zip(shown, later):
        assert np.array_equal(layer.data, volume.array)
        # volumes are (x, y, z) in mm, layers (z, y, x)
        assert tuple(layer.scale) == (2, 2, 2) and tuple(layer.translate) == (-2, 0, 4)
        assert layer.metadata["medgan_provenance"]["step"] == 3
    assert viewer.layers.selection.active is mine


def test_preview_without_turns_is_put_at_once(make_napari_viewer):
    from napari_medgan._widgets._preview import PREVIEW, add_placeholders, show_preview
    from napari_medgan.config import ModelConfig
    from napari_medgan.io import Volume

    viewer = make_napari_viewer()
    add_placeholders(viewer, ModelConfig(patch_size=16))
    head = Volume(np.full((16, 16, 16), 7.0, np.float32), spacing=(1.5, 1.5, 3.0))
    show_preview(viewer, ev.PreviewEvent(step=4, volumes=[head]), fit_view=True)
    layer = viewer.layers[PREVIEW]
    assert layer.visible and (layer.data == 7.0).all() and tuple(layer.scale) == (3, 1.5, 1.5)


def test_pause_resume_and_stop_mid_run(make_napari_viewer, qtbot, tmp_path):
    widget = _open(make_napari_viewer(), "Train GAN")
    configure_tiny(widget, tmp_path / "run", steps=1000, preview_every=1000)
    done = []
    widget._on_start()
    worker = widget.run.worker
    worker.yielded.connect(lambda e: done.append(e) if isinstance(e, ev.DoneEvent) else None)
    qtbot.waitUntil(lambda: widget.run.trainer.step >= 1, timeout=60_000)
    widget._on_pause()
    assert widget.run.trainer.paused and widget.pause_btn.text() == "Resume"
    # paused is visible: the status line (bold), the progress bar
    assert widget.status.text().startswith("PAUSED at step")
    assert "bold" in widget.status.styleSheet()
    assert widget.progress.text().startswith("paused at step ")
    qtbot.wait(1500)  # a step in flight arrives: the line still says paused
    assert widget.status.text().startswith("PAUSED at step"), widget.status.text()
    step = widget.run.trainer.step
    qtbot.wait(500)
    assert widget.run.trainer.step == step  # and it is: no step while paused
    widget._on_pause()
    assert not widget.run.trainer.paused
    assert widget.progress.text().startswith("step ") and "bold" not in widget.status.styleSheet()
    qtbot.waitUntil(lambda: widget.status.text().startswith("step "), timeout=60_000)
    widget._on_stop()
    _wait_idle(qtbot, widget)
    assert done and done[0].reason == "stopped" and done[0].step < 1000
    assert _is_checkpoint(widget.checkpoint)


def test_error_in_the_worker_is_one_notification_and_the_widget_recovers(
        make_napari_viewer, qtbot, tmp_path, notifications):
    widget = _open(make_napari_viewer(), "Train GAN")
    configure_tiny(widget, tmp_path / "run", steps=2)
    d = session_for(widget.viewer).dataset
    d.source, d.folder = "folder", str(tmp_path / "missing")
    widget._on_start()
    _wait_idle(qtbot, widget)
    errors = error_messages(notifications)
    assert len(errors) == 1 and "missing" in errors[0] and "\n" not in errors[0]
    assert "missing" in widget.status.text()
    assert widget.start_btn.isEnabled()
    assert "GAN preview" not in widget.viewer.layers  # the empty placeholder went too


def test_bad_settings_are_reported_before_starting(make_napari_viewer, notifications):
    widget = _open(make_napari_viewer(), "Train GAN")
    widget.start_from.setCurrentIndex(1)  # fine-tune, but no checkpoint chosen
    widget._on_start()
    assert widget.run is None
    assert any("fine-tune" in m for m in error_messages(notifications))


def test_a_new_run_into_a_used_folder_is_refused_and_the_old_run_is_untouched(
        make_napari_viewer, qtbot, tmp_path, notifications):
    widget = _open(make_napari_viewer(), "Train GAN")
    configure_tiny(widget, tmp_path / "run", steps=2)
    widget._on_start()
    _wait_idle(qtbot, widget)
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    config = (tmp_path / "run" / "config.yaml").read_text()
    widget._on_start()  # "scratch" again into the same folder
    assert widget.run is None
    errors = error_messages(notifications)
    assert any(str(tmp_path / "run") in m and "already holds a run" in m for m in errors)
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before
    assert (tmp_path / "run" / "config.yaml").read_text() == config


def test_closing_the_viewer_stops_training_and_writes_a_checkpoint(
        make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = _open(viewer, "Train GAN")
    configure_tiny(widget, tmp_path / "run", steps=1000, preview_every=1000)
    widget._on_start()
    run = widget.run
    qtbot.waitUntil(lambda: run.trainer.step >= 1, timeout=60_000)
    viewer.close()
    assert run.finished.is_set()  # closing waited for the thread
    assert run.trainer.step < 1000
    assert _is_checkpoint(tmp_path / "run" / "checkpoints" / "final")


def test_a_closed_dock_is_not_called_back_by_the_session(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Train GAN")
    session = widget.session
    viewer.window.remove_dock_widget(dock)  # napari unparents the widget; Qt deletes it
    with qtbot.waitSignal(widget.destroyed, timeout=5000):
        widget.deleteLater()
    session.changed.emit("dataset")  # would raise on the deleted labels if still connected
    assert len(session.changed) == 0


def test_the_status_line_estimates_the_time_left(make_napari_viewer, qtbot):
    widget = _open(make_napari_viewer(), "Train GAN")
    for step in (1, 2, 3):
        widget._on_event(ev.StepEvent(step, 1000, {"G": 1.0, "D": 1.0}, 0.01, 2e-4, 4e-4))
    assert widget.status.text().startswith("step 1/1000")  # the line changes 4x a second
    qtbot.waitUntil(lambda: widget.status.text().startswith("step 3/1000"), timeout=2000)
    assert "left)" in widget.status.text()


def test_dock_settings_are_remembered_between_sessions(make_napari_viewer, dock_settings):
    import json

    from napari_medgan._widgets import _remember

    first = _open(make_napari_viewer(), "Train GAN")
    first.model.setCurrentText("pix2pix3d")
    first.task.setCurrentText("superres")
    first.steps.setValue(1234)
    first.lr_g.setValue(3e-4)
    first.loss.setCurrentText("hinge")
    first.device.setCurrentText("cpu")
    first.out.edit.setText("/somewhere/run")  # a run folder is not a setting to bring back
    synth = _open(first.viewer, "Synthesize & Compare")
    synth.seed.setValue(42)
    synth.show_baseline.setChecked(False)
    _remember.flush()
    saved = json.loads(dock_settings.read_text())["Train GAN"]
    assert saved["steps"] == 1234 and saved["task"] == "superres" and "out" not in saved

    _remember._STORE = None  # a new session reads the file again
    second = _open(make_napari_viewer(), "Train GAN")
    assert (second.model.currentText(), second.task.currentText()) == ("pix2pix3d", "superres")
    assert second.steps.value() == 1234 and second.lr_g.value() == 3e-4
    assert (second.loss.currentText(), second.device.currentText()) == ("hinge", "cpu")
    assert second.out.path() == ""
    synth = _open(second.viewer, "Synthesize & Compare")
    assert synth.seed.value() == 42 and not synth.show_baseline.isChecked()
    assert synth.count.value() == 2  # never changed: the default
    run = second.build_run()
    assert (run.model.name, run.model.task, run.train.steps) == ("pix2pix3d", "superres", 1234)


def test_unreadable_or_odd_remembered_settings_give_the_defaults(make_napari_viewer,
                                                                 dock_settings):
    dock_settings.write_text('{"Train GAN": {"steps": "many", "device": "cuda:7", '
                             '"loss": "nonsense", "batch_size": 8}}')
    widget = _open(make_napari_viewer(), "Train GAN")
    assert widget.steps.value() == 2000 and widget.device.currentText() == "auto"
    assert widget.loss.currentText() == "bce" and widget.batch.value() == 8


def test_every_control_says_what_it_is_as_the_cli_does(make_napari_viewer):
    from qtpy.QtWidgets import QAbstractButton, QComboBox, QLineEdit, QSpinBox

    from napari_medgan.cli import build_parser

    viewer = make_napari_viewer()
    train, synth = _open(viewer, "Train GAN"), _open(viewer, "Synthesize & Compare")
    dataset = _open(viewer, "Dataset")
    for dock in (train, synth, dataset):
        for w in dock.findChildren((QComboBox, QSpinBox, QLineEdit, QAbstractButton)):
            owner = w
            while owner is not dock and not owner.toolTip():
                owner = owner.parentWidget()  # a PathPicker's line edit: the picker's tip
            inner = isinstance(w.parentWidget(), (QComboBox, QSpinBox))  # a spin box's edit
            if w.isVisibleTo(dock) and not inner:
                assert owner.toolTip(), f"{dock.__class__.__name__}: {w.text() if isinstance(w, QAbstractButton) else w!r} has no tooltip"
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    helps = {(name, a.dest): a.help for name in ("train", "generate")
             for a in sub[name]._actions}
    assert train.steps.toolTip() == helps["train", "steps"]
    assert dataset.count.toolTip() == helps["train", "phantom_count"]
    assert dataset.patch.toolTip() == helps["train", "patch_size"]
    assert train.lr_d.toolTip() == helps["train", "lr_d"]
    assert train.out.toolTip().startswith(helps["train", "out"])
    assert synth.seed.toolTip() == helps["generate", "seed"]
    assert synth.reference.toolTip().startswith(helps["generate", "reference"])
    assert not train.pause_btn.isEnabled() and "no run in progress" in train.pause_btn.toolTip()


def test_resuming_a_folder_another_process_trains_is_one_notification(
        make_napari_viewer, qtbot, tmp_path, notifications):
    hold = ("import sys, time; from napari_medgan.training.lock import RunFolderLock; "
            "RunFolderLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)")
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        widget = _open(make_napari_viewer(), "Train GAN")
        configure_tiny(widget, tmp_path / "unused", steps=2)
        widget.start_from.setCurrentIndex(2)  # resume run folder
        widget.init_path.edit.setText(str(run))
        widget._on_start()
        _wait_idle(qtbot, widget)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    errors = error_messages(notifications)
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert errors[0].startswith(f"Training failed: {run}: run folder is in use by another "
                                f"training process (pid {holder.pid} ")
    assert widget.start_btn.isEnabled()


def test_choosing_a_run_folder_to_resume_shows_its_curve(make_napari_viewer, tmp_path,
                                                         tiny_run):
    from napari_medgan.training.trainer import Trainer

    for _ in Trainer(tiny_run(tmp_path / "run", steps=6, log_every=1)).run():
        pass
    widget = _open(make_napari_viewer(), "Train GAN")
    widget.start_from.setCurrentIndex(2)  # resume run folder
    widget.init_path.set_path(str(tmp_path / "run"))
    steps, values = widget.plot.data["G"]
    assert steps == [1, 2, 3, 4, 5, 6] and all(np.isfinite(values))
    assert widget.status.text().startswith(f"{tmp_path / 'run'}: dcgan3d/synthesis at step 6 "
                                           "(finished")
    widget.show_record(str(tmp_path / "run"), until=3)  # as a resume from step 3 draws it
    assert widget.plot.data["G"][0] == [1, 2, 3]
