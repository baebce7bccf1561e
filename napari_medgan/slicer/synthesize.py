"""Slicer module "Synthesize": one volume (and its label map) from an unconditional model.

``napari-medgan-slicer-synthesize`` / ``python -m napari_medgan.slicer.synthesize``; the same
sampling as ``napari-medgan generate`` (:func:`napari_medgan.training.inference.generate`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_medgan.slicer.common import (
    DEVICE,
    MODEL_GROUP,
    load_model,
    read_volume,
    write_volume,
)
from napari_medgan.slicer.spec import CLIModule, Group, Param, Progress, SlicerModuleError
from napari_medgan.tasks import TASKS


def run(args: argparse.Namespace, progress: Progress) -> list[Path]:
    from napari_medgan.training.inference import generate

    loaded = load_model(args, progress, conditions=("",))
    if args.outputLabels and not TASKS[loaded.model.task].outputs_labels:
        raise SlicerModuleError(f"{loaded.path}: a {loaded.model.name}/{loaded.model.task} "
                                "model draws no label maps: leave 'Output label map' empty, "
                                "or use a joint model")
    reference = (read_volume(args.referenceVolume, False, progress, 0.2)
                 if args.referenceVolume else None)
    progress.stage(f"synthesizing (seed {args.seed})", 0.3)
    images, labels = generate(loaded, 1, seed=args.seed, reference=reference)
    progress.stage("writing the result", 0.9)
    written = [write_volume(images[0], args.outputVolume)]
    if args.outputLabels:  # generate() names the label values (.seg.nrrd segments)
        written.append(write_volume(labels[0], args.outputLabels))
    return written


MODULE = CLIModule(
    name="synthesize",
    launcher="NapariMedGANSynthesize",
    script="napari-medgan-slicer-synthesize",
    title="Synthesize",
    description="Draw a synthetic volume from a napari-medgan GAN trained without a condition "
                "(noise to image, or to image and label map). The same seed gives the same "
                "volume. The result has the reference volume's voxel spacing and orientation "
                "and is centred on it (default: the geometry of the training data).",
    groups=(
        Group("Input and output", "The synthetic volume and where it is placed.", (
            Param("image", "outputVolume", "Output volume",
                  "The synthetic image, in the training data's units (e.g. HU).",
                  channel="output", index=0),
            Param("image", "outputLabels", "Output label map",
                  "The label map drawn with the image (joint models only); segments are "
                  "named in .seg.nrrd files.", channel="output", image_type="label"),
            Param("image", "referenceVolume", "Reference volume",
                  "Optional: a volume whose spacing and orientation the result takes, "
                  "centred on it.", channel="input"),
            Param("integer", "seed", "Seed", "Sampling seed: the same seed, the same volume.",
                  default=0, constraints=(0, 2**31 - 1, 1)),
        )),
        MODEL_GROUP,
        Group("Advanced", "Where the network runs.", (DEVICE,), advanced=True),
    ),
    run=run,
)


def main(argv: list[str] | None = None) -> int:
    return MODULE.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
