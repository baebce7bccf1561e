"""Slicer module "Image to image": denoising, super-resolution, inpainting (with a mask) or
translation to another modality, whichever the model was trained for.

``napari-medgan-slicer-image2image`` / ``python -m napari_medgan.slicer.image2image``; the
same inference as ``napari-medgan generate --condition [--mask]``
(:func:`napari_medgan.training.inference.synthesize_from`). The result has the input's
geometry; super-resolution's is the input's field of view on the finer grid the model was
trained for (same origin corner, direction and extent).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_medgan.slicer.common import (
    MODEL_GROUP,
    WINDOW_SETTINGS,
    load_model,
    read_volume,
    write_volume,
)
from napari_medgan.slicer.spec import CLIModule, Group, Param, Progress, SlicerModuleError
from napari_medgan.tasks import TASKS

CONDITIONS = ("image", "image+mask")
IMAGE_TASKS = tuple(name for name, task in TASKS.items() if task.condition in CONDITIONS)


def run(args: argparse.Namespace, progress: Progress) -> list[Path]:
    from napari_medgan.training.inference import synthesize_from

    loaded = load_model(args, progress, conditions=CONDITIONS)
    task = TASKS[loaded.model.task]
    if args.expectedTask not in ("any", task.name):
        raise SlicerModuleError(f"{loaded.path}: a {task.name} model ({task.summary}), but "
                                f"the task chosen is {args.expectedTask}")
    if task.needs_mask and args.maskLabels is None:
        raise SlicerModuleError(f"{loaded.path}: an {task.name} model needs 'Mask' (a label "
                                "map, non-zero where the image is to be filled in)")
    image = read_volume(args.inputVolume, False, progress, 0.15)
    mask = read_volume(args.maskLabels, True, progress, 0.2) if task.needs_mask else None
    progress.stage(f"{task.name}: {task.summary}", 0.3)
    result = synthesize_from(loaded, image, mask=mask, overlap=args.overlap,
                             flip_ensemble=not args.onePass)
    if tuple(result.spacing) != tuple(image.spacing):
        print("voxel size {} -> {} mm (x, y, z)".format(
            "x".join(f"{s:g}" for s in image.spacing),
            "x".join(f"{s:g}" for s in result.spacing)))
    progress.stage("writing the result", 0.9)
    return [write_volume(result, args.outputVolume)]


MODULE = CLIModule(
    name="image2image",
    launcher="NapariMedGANImageToImage",
    script="napari-medgan-slicer-image2image",
    title="Image to image",
    description="Run a napari-medgan image-to-image model (pix2pix3d) over a whole volume: "
                "denoise, super-resolve, fill in a masked region, or translate to another "
                "modality, as the model was trained. The input is used as it is (a noisy, "
                "thick-slice or damaged scan); any size, covered by overlapping windows.",
    groups=(
        Group("Input and output", "The volume to process and the result.", (
            Param("image", "inputVolume", "Input volume", "The volume to process.",
                  channel="input", index=0),
            Param("image", "outputVolume", "Output volume",
                  "The result, in the target's units; super-resolution gives a finer grid "
                  "over the same field of view.", channel="output", index=1,
                  reference="inputVolume"),
            Param("image", "maskLabels", "Mask",
                  "Inpainting only: a label map on the input's grid, non-zero where the "
                  "image is to be filled in; every other voxel is kept as it is.",
                  channel="input", image_type="label"),
            Param("string-enumeration", "expectedTask", "Task",
                  "Refuse a model trained for another task (any = run what the model does).",
                  default="any", elements=("any", *IMAGE_TASKS)),
        )),
        MODEL_GROUP,
        WINDOW_SETTINGS,
    ),
    run=run,
)


def main(argv: list[str] | None = None) -> int:
    return MODULE.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
