"""Screenshot: a super-resolution result beside the interpolation a radiologist already trusts.

Trains a x2 super-resolution model briefly on one half of nibabel's real T1 head, opens
the other half (held out) and its box-averaged 4 mm version in napari, runs *Synthesize &
Compare* with "Show classical baseline" on, turns on the side-by-side grid and saves the
window to ``resources/screenshots/superres_baseline.png``::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot_baseline.py

About a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "resources" / "screenshots"))
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()

    import napari
    from _real_volumes import load_t1
    from screenshots import open_widget, save, wait_for

    from napari_medgan._widgets._common import add_volume_layer
    from napari_medgan.config import RunConfig
    from napari_medgan.data.superres import crop_to_multiple, downsample_volume
    from napari_medgan.evaluation import split_halves
    from napari_medgan.training.trainer import Trainer

    image, _ = load_t1()
    train, test = split_halves(image)
    test = crop_to_multiple(test, (2, 2, 2))  # the grid the x2 result lands on
    run_dir = tempfile.mkdtemp(prefix="medgan-sr-shot-")
    run = RunConfig.from_dict({
        "model": {"name": "pix2pix3d", "task": "superres", "patch_size": 16, "channels": 32},
        "train": {"steps": args.steps, "batch_size": 4, "lr_g": 1e-3, "lr_d": 1e-3,
                  "preview_every": 10_000, "checkpoint_every": 10_000},
        "out": run_dir})
    for _ in Trainer(run, images=[train]).run():
        pass

    viewer = napari.Viewer(show=True, title="napari-medgan")
    viewer.window.resize(1500, 940)
    try:
        add_volume_layer(viewer, test.with_array(test.array.astype("float32")),
                         "T1 held out (2 mm)")
        add_volume_layer(viewer, downsample_volume(test, (2, 2, 2)), "T1 4 mm")
        _, sy = open_widget(viewer, "Synthesize & Compare")
        sy.checkpoint.set_path(run_dir)
        sy._on_checkpoint_changed()
        wait_for(lambda: sy.loaded is not None)
        sy.reference.set_layer("T1 held out (2 mm)")
        sy.condition.set_layer("T1 4 mm")
        sy._on_synthesize()
        wait_for(lambda: sy.synthetic and sy.synth_btn.isEnabled())
        sy._on_side_by_side(True)
        viewer.dims.set_point(0, viewer.dims.point[0])
        viewer.reset_view()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        save(viewer, out / "superres_baseline.png")
    finally:
        viewer.close()


if __name__ == "__main__":
    main()
