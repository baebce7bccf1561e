"""Slicer module "Label map to image": a label2image model over a whole label map.

``napari-medgan-slicer-label2image`` / ``python -m napari_medgan.slicer.label2image``; the
same inference as ``napari-medgan generate --condition``
(:func:`napari_medgan.training.inference.synthesize_from`: sliding windows of the training
patch, Gaussian blending). The image has the label map's geometry exactly.
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
from napari_medgan.slicer.spec import CLIModule, Group, Param, Progress


def run(args: argparse.Namespace, progress: Progress) -> list[Path]:
    from napari_medgan.training.inference import synthesize_from

    loaded = load_model(args, progress, conditions=("labels",))
    labels = read_volume(args.inputLabels, True, progress, 0.2)
    progress.stage("synthesizing the image over the label map", 0.3)
    result = synthesize_from(loaded, labels, overlap=args.overlap,
                             flip_ensemble=not args.onePass)
    progress.stage("writing the result", 0.9)
    return [write_volume(result, args.outputVolume)]


MODULE = CLIModule(
    name="label2image",
    launcher="NapariMedGANLabelToImage",
    script="napari-medgan-slicer-label2image",
    title="Label map to image",
    description="Synthesize an image from a label map with a napari-medgan label2image model "
                "(pix2pix3d): label values are the classes the model was trained on, "
                "0 = background. Any size: the volume is covered by overlapping windows.",
    groups=(
        Group("Input and output", "The label map and the synthetic image.", (
            Param("image", "inputLabels", "Input label map",
                  "The label map to turn into an image.", channel="input", index=0,
                  image_type="label"),
            Param("image", "outputVolume", "Output volume",
                  "The synthetic image, on the label map's grid.", channel="output", index=1,
                  reference="inputLabels"),
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
