"""What the napari-medgan Slicer modules share: the model parameters, loading the model,
checking it serves the module, and reading and writing volumes (``napari_medgan.io``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_medgan.slicer.spec import Group, Param, Progress, SlicerModuleError
from napari_medgan.tasks import TASKS

MODEL_GROUP = Group("Model", "The trained napari-medgan model to sample from.", (
    Param("directory", "modelDirectory", "Model folder",
          "A napari-medgan run folder (its latest checkpoint is used), one checkpoint folder "
          "(checkpoints/step-NNNNNN) or a model bundle folder. Give this or a bundle file.",
          channel="input"),
    Param("file", "modelFile", "Model bundle file",
          "A model bundle as one .zip file (napari-medgan export-model). Give this or a "
          "model folder.", channel="input", file_extensions=(".zip",)),
))
DEVICE = Param("string-enumeration", "device", "Device",
               "Where the network runs: auto takes a CUDA GPU (or Apple MPS) when there is one.",
               default="auto", elements=("auto", "cpu", "cuda", "mps"))
OVERLAP = Param("float", "overlap", "Window overlap",
                "Overlap of the sliding windows (training patch size) that cover the whole "
                "volume; their results are blended with Gaussian weights.",
                default=0.5, constraints=(0.0, 0.9, 0.05))

ONE_PASS = Param("boolean", "onePass", "One pass (no flip average)",
                 "Run the model once instead of averaging its results for the 8 flips of the "
                 "input (the default, as napari-medgan generate does: closer to the truth, 8x "
                 "the time).", default=False)

#: The advanced settings of the modules that slide windows over a whole volume.
WINDOW_SETTINGS = Group("Advanced", "Inference settings.", (OVERLAP, ONE_PASS, DEVICE),
                        advanced=True)

#: The module that serves each kind of generator input (``Task.condition``).
MODULE_FOR_CONDITION = {"": "Synthesize", "labels": "Label map to image",
                        "image": "Image to image", "image+mask": "Image to image"}


def load_model(args: argparse.Namespace, progress: Progress, conditions: tuple[str, ...]):
    """The model the user chose (exactly one of ``--modelDirectory`` / ``--modelFile``),
    loaded by :func:`napari_medgan.training.inference.load_generator`, refused with the
    name of the right module when its task takes another kind of input."""
    chosen = [p for p in (args.modelDirectory, args.modelFile) if p]
    if len(chosen) != 1:
        raise SlicerModuleError(
            "give the model as exactly one of --modelDirectory (run, checkpoint or bundle "
            f"folder) and --modelFile (bundle .zip); got {len(chosen)}")
    progress.stage(f"loading the model {Path(chosen[0]).name}", 0.05)
    from napari_medgan.training.inference import load_generator

    loaded = load_generator(chosen[0], device=args.device)
    task = TASKS[loaded.model.task]
    if task.condition not in conditions:
        raise SlicerModuleError(
            f"{loaded.path}: a {loaded.model.name}/{loaded.model.task} model "
            f"({task.summary}): use the napari-medgan "
            f"'{MODULE_FOR_CONDITION[task.condition]}' module")
    return loaded


def read_volume(path: Path, is_label: bool, progress: Progress, fraction: float):
    from napari_medgan.io import load_volume

    progress.stage(f"reading {Path(path).name}", fraction)
    return load_volume(path, is_label=is_label)


def write_volume(volume, path: Path) -> Path:
    """Written atomically, in the format the suffix names (Slicer asks for ``.nrrd``)."""
    from napari_medgan.io import save_volume

    return save_volume(volume, path)

