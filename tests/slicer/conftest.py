"""Tiny trained models (16^3, one or two steps) and volumes as Slicer hands them over."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from slicer_helpers import slicer_environment

#: model family and steps per task; conditional runs hold nothing out (val_fraction 0)
MODELS = {"joint": ("dcgan3d", 2), "label2image": ("pix2pix3d", 1), "denoise": ("pix2pix3d", 1),
          "translate": ("pix2pix3d", 1), "superres": ("pix2pix3d", 1),
          "inpaint": ("pix2pix3d", 1)}
#: An oblique, anisotropic grid with an origin far from 0: geometry that must survive.
SPACING = (1.2, 0.9, 1.5)
ORIGIN = (12.5, -30.0, 7.25)
_C, _S = np.cos(0.3), np.sin(0.3)
DIRECTION = np.array([[_C, -_S, 0.0], [_S, _C, 0.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="session")
def trained_model(tiny_run, tmp_path_factory):
    """``trained_model(task)``: the run folder of a tiny model for ``task``, trained once."""
    from napari_medgan.training.trainer import Trainer

    cache: dict[str, Path] = {}

    def get(task: str) -> Path:
        if task not in cache:
            model, steps = MODELS[task]
            out = tmp_path_factory.mktemp(f"model-{task}") / "run"
            run = tiny_run(out, model=model, task=task, steps=steps, checkpoint_every=steps,
                           preview_every=1000)
            if run.model.conditional:
                run = dataclasses.replace(run, data=dataclasses.replace(run.data,
                                                                        val_fraction=0.0))
            list(Trainer(run).run())
            cache[task] = out
        return cache[task]

    return get


@pytest.fixture(scope="session")
def slicer_inputs(tmp_path_factory) -> dict[str, Path]:
    """A phantom image, its label map and a mask, written as Slicer writes a CLI module's
    inputs: NRRD files in its temporary folder, named after the process and the node."""
    from napari_medgan.data.phantom import make_head_phantom
    from napari_medgan.io import Volume, save_volume

    folder = tmp_path_factory.mktemp("Slicer")
    image, labels = make_head_phantom((16, 16, 16), seed=5)
    geometry = dict(spacing=SPACING, origin=ORIGIN, direction=DIRECTION)
    mask = np.zeros((16, 16, 16), np.uint8)
    mask[5:10, 6:11, 4:9] = 1
    volumes = {
        "image": Volume(np.asarray(image.array, np.float32), **geometry),
        "labels": Volume(np.asarray(labels.array), is_label=True, **geometry),
        "mask": Volume(mask, is_label=True, **geometry),
    }
    nodes = {"image": "vtkMRMLScalarVolumeNodeB", "labels": "vtkMRMLLabelMapVolumeNodeC",
             "mask": "vtkMRMLLabelMapVolumeNodeD"}
    return {key: save_volume(vol, folder / f"BJDE_{nodes[key]}.nrrd")
            for key, vol in volumes.items()}


@pytest.fixture(scope="session")
def slicer_env() -> dict[str, str]:
    return slicer_environment()


@pytest.fixture(scope="session")
def module_folder(tmp_path_factory) -> Path:
    """The folder a user adds to Slicer's module paths, written by the console script."""
    script = Path(sys.executable).parent / "napari-medgan-slicer"
    assert script.exists(), f"{script}: reinstall the package (pip install -e .)"
    folder = tmp_path_factory.mktemp("slicer-modules")
    subprocess.run([str(script), "install", str(folder)], check=True, capture_output=True,
                   text=True, timeout=120)
    return folder
