"""Screenshots of the three widgets for docs/widgets.md and the README.

Opens napari, loads a phantom head, opens "Dataset", "Train GAN" and
"Synthesize & Compare", trains the demo's model in the Train dock (two-stage image + label
pairs at 64^3, the demo's settings, a few minutes), then a synthesis with the shipped pretrained
model next to real phantom heads, computes the set metrics, turns on the side-by-side grid,
and saves the whole window to
``resources/screenshots/{dataset,train,synthesize}.png``.

Needs a display; on a headless machine run it under a virtual one::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py

Takes about ten minutes on two CPU cores (the training is the demo's: twostage3d joint at
64^3, label grid 1/2, batch 4, width 16, 400 steps).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "napari-medgan"


def wait_for(condition, timeout: float = 900.0) -> None:
    """Run the Qt event loop until ``condition()`` is true."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("gave up waiting")
        QApplication.processEvents()
        time.sleep(0.01)


def pump(seconds: float) -> None:
    """Keep the event loop running for a while (repaints, queued slots)."""
    end = time.monotonic() + seconds
    wait_for(lambda: time.monotonic() > end)


def dismiss_notifications() -> None:
    """Close napari's pop-up notifications so they do not cover the canvas."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtWidgets import QApplication

    for widget in QApplication.allWidgets():
        if isinstance(widget, NapariQtNotification):
            widget.close()


def save(viewer, path: Path) -> None:
    for axis in viewer.dims.not_displayed:  # the middle slice, not where the last layer left it
        viewer.dims.set_current_step(axis, viewer.dims.nsteps[axis] // 2)
    pump(0.5)
    dismiss_notifications()
    pump(0.5)
    viewer.screenshot(path=str(path), canvas_only=False)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "resources" / "screenshots"))
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import os

    # napari's settings and the docks' remembered fields in a temporary folder: the
    # pictures show the defaults, and the script's settings do not become the user's
    os.environ["NAPARI_CONFIG"] = str(Path(tempfile.mkdtemp(prefix="medgan-shots-")) /
                                      "settings.yaml")
    import napari

    viewer = napari.Viewer(show=True, title="napari-medgan")
    viewer.window.resize(1500, 940)
    run_dir = tempfile.mkdtemp(prefix="medgan-screenshot-run-")
    try:
        run_tour(viewer, out, args.steps, run_dir)
    finally:
        viewer.close()  # also stops a training still running (final checkpoint, thread joined)
        shutil.rmtree(run_dir, ignore_errors=True)


def open_widget(viewer, name: str, previous=None):
    """Dock widget ``name``, hiding the previous one (one tall dock at a time)."""
    if previous is not None:
        previous.setVisible(False)
    return viewer.window.add_plugin_dock_widget(PLUGIN, name)


def run_tour(viewer, out: Path, steps: int, run_dir: str) -> None:
    from napari_medgan._widgets._common import add_volume_layer
    from napari_medgan.data.phantom import make_head_phantom
    from napari_medgan.pretrained import PRETRAINED_HEAD
    from napari_medgan.provenance import provenance_metadata

    # ---- Dataset: the sample head as layers, described; one random 32^3 training patch
    viewer.open_sample(PLUGIN, "head_phantom")
    sample, sample_labels = viewer.layers[0].name, viewer.layers[1].name
    dock, ds = open_widget(viewer, "Dataset")
    ds.source.setCurrentText("layers")
    ds.images.select([sample])
    ds.labels.select([sample_labels])
    ds.patch.setValue(32)
    ds._on_describe()
    ds._on_show_patch()
    wait_for(lambda: "random patch" in viewer.layers)
    viewer.layers[sample_labels].visible = False
    viewer.canvas.grid.enabled = True
    viewer.reset_view()
    save(viewer, out / "dataset.png")

    # ---- Train GAN: the demo's model (image + label pairs at 64^3, napari_medgan/demo.py),
    # live loss plot and the preview layers (the image with its label map over it)
    viewer.canvas.grid.enabled = False
    viewer.layers.clear()
    ds.source.setCurrentText("phantom")
    ds.count.setValue(64)
    ds.size.setValue(64)
    ds.patch.setValue(64)
    dock, tr = open_widget(viewer, "Train GAN", dock)
    tr.model.setCurrentText("twostage3d")
    tr.task.setCurrentText("joint")
    tr.label_scale.setValue(2)
    tr.steps.setValue(steps)
    tr.batch.setValue(4)
    tr.channels.setValue(16)
    tr.lr_d.setValue(2e-4)
    tr.preview_every.setValue(50)
    tr.device.setCurrentText("cpu")
    tr.out.edit.setText(run_dir)
    tr._on_start()
    wait_for(lambda: tr.run is None, timeout=3600)
    viewer.reset_view()
    save(viewer, out / "train.png")

    # ---- Synthesize & Compare: samples next to a real head, same contrast, PSNR/SSIM,
    # and the set metrics of the three samples against two real heads
    for seed, name in ((101, "real head 2"), (100, "real head")):
        image, _ = make_head_phantom((64, 64, 64), seed=seed, modality="mr")
        add_volume_layer(viewer, image, name,
                         metadata=provenance_metadata("real", source=f"head phantom, seed {seed}"))
    dock, sy = open_widget(viewer, "Synthesize & Compare", dock)
    # the shipped pretrained model (3000 steps at 64^3), not the short run trained above
    sy.checkpoint.edit.setText(str(PRETRAINED_HEAD))
    sy._on_checkpoint_changed()
    sy.reference.set_layer("real head")
    sy.count.setValue(3)
    sy._on_synthesize()
    wait_for(lambda: sy.synthetic and sy.synth_btn.isEnabled())
    sy.set_metrics._on_set_metrics()
    wait_for(sy.set_metrics.metrics_btn.isEnabled)
    viewer.layers["GAN preview"].visible = False
    sy._on_side_by_side(True)
    viewer.reset_view()
    save(viewer, out / "synthesize.png")

if __name__ == "__main__":
    main()
