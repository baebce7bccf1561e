"""The model card of a bundle (``docs/README.md``): Hugging Face front matter, then what the
model is, what it was trained on (fingerprints), its figures or that it has none, its
intended use and how to use it. Written from :mod:`napari_medgan.bundle_metadata`'s values.
"""

from __future__ import annotations

from napari_medgan import __version__
from napari_medgan.bundle_metadata import INTENDED_USE
from napari_medgan.tasks import TASKS


def model_card(info: dict, metadata: dict) -> str:
    """``docs/README.md``: Hugging Face front matter, then what the model is, what it was
    trained on (fingerprints), its figures (or that there are none) and how to use it.
    ``info`` is :func:`~napari_medgan.bundle_metadata.describe_run`'s dict plus ``name``,
    ``file`` and ``license``; ``metadata`` the bundle's ``metadata.json``."""
    model = info["model"]
    task = TASKS[model.task]
    lines = [
        *front_matter(info),
        f"# {info['name']}", "",
        f"A 3D GAN generator trained with napari-medgan {__version__}: family **{model.name}**, "
        f"task **{model.task}** ({task.summary}).", "",
        "**Not for diagnosis**: research and teaching only; synthetic volumes must not inform "
        "any clinical decision.", "",
        "## Model", "", *_model_lines(info, metadata), "",
        "## Training", "", *_training_lines(info), "",
        "## Figures", "", *figure_lines(info["figures"]), "",
        *(["## Limitations", "", *[f"- {t}" for t in info["limitations"]], ""]
          if info.get("limitations") else []),
        "## Intended use", "", INTENDED_USE + " The samples follow the training data's "
        "distribution, including its biases; they are not real patients and must not be "
        "presented as such.", "",
        "## Use", "", *_use_lines(info), "",
        "## Files", "",
        "- `configs/metadata.json`: MONAI bundle metadata (network_data_format), intensity, "
        "labels, data fingerprints, training record",
        "- `models/model.safetensors`: the EMA generator's weights",
        "- `models/model.json`: model config, normaliser, geometry and step (what loading needs)",
        "",
    ]
    return "\n".join(lines)


def front_matter(info: dict) -> list[str]:
    """The Hugging Face model card header: library, pipeline, license, tags."""
    model, modality = info["model"], info["data"]["modality"].lower()
    pipeline = "image-to-image" if model.conditional else "unconditional-image-generation"
    tags = []
    for tag in ("medical-imaging", "3d", "gan", modality, model.task, model.name):
        if tag != "n/a" and tag not in tags:
            tags.append(tag)
    return ["---", "library_name: napari-medgan", f"pipeline_tag: {pipeline}",
            f"license: {info['license']}", "tags:", *[f"- {t}" for t in tags], "---", ""]


def _model_lines(info: dict, metadata: dict) -> list[str]:
    out = metadata["network_data_format"]["outputs"]["image"]
    intensity = metadata["output_intensity"]
    if not out["is_patch_data"]:
        extent = "whole volumes"
    elif info["model"].conditional:
        extent = "patches (run over whole volumes of any size by sliding windows)"
    else:
        extent = "patches"
    value_range = intensity["value_range"]
    lines = [
        f"- Output: {_shape(out['spatial_shape'])} voxels (z, y, x) at "
        f"{_mm(info['reference'].spacing)} mm (x, y, z), {extent}",
        f"- Intensity: {intensity['units']}"
        + (f", range {value_range[0]:g} to {value_range[1]:g}" if value_range else "")
        + f" (preset {intensity['preset']})",
    ]
    if info["labels"]:
        lines.append("- Labels: " + ", ".join(f"{s['value']} {s['name']}" for s in info["labels"]))
    return lines


def _training_lines(info: dict) -> list[str]:
    data, training = info["data"], info["training"]
    wall = training["wall_seconds"]
    return [
        f"- Steps: {training['steps']}; wall time: "
        + (_duration(wall) if wall is not None else "not recorded (the run has no "
           "history.jsonl)"),
        f"- Data: {data['source']}; "
        + (f"{data['volumes']} volume(s)" if data["volumes"] else "number of volumes not recorded")
        + f"; reference grid {_shape(data['reference_shape_zyx'])} voxels (z, y, x) at "
        f"{_mm(data['spacing_mm_xyz'])} mm; modality {data['modality']}"
        + ("; with label maps" if data["label_maps"] else "")
        + (f"; paired targets ({data['target_modality']})" if data["paired_targets"] else ""),
        "- The bundle holds fingerprints of the data only: no file names, paths or patient "
        "data.",
        *(["", "Trained with:", "", "```bash", *info["recipe"], "```"]
          if info.get("recipe") else []),
    ]


def _use_lines(info: dict) -> list[str]:
    given = " --condition INPUT.nii.gz" if info["model"].conditional else " --n 4 --seed 0"
    return [
        "```bash",
        f"napari-medgan generate {info['file']} --out samples/{given}",
        f"napari-medgan train --init {info['file']} --data MY_VOLUMES/ --out runs/finetune",
        "```", "",
        "In napari, drop the bundle (folder or .zip) on the viewer: it opens in "
        "Synthesize & Compare. The NIfTI files `generate` writes open in 3D Slicer with their "
        "spacing and orientation; `configs/metadata.json` lists the label names and colours.",
    ]


def figure_lines(figures: dict) -> list[str]:
    """The run's figures as lines, and plainly which kinds it has none of."""
    lines = []
    if figures["checkpoint"]:
        f = figures["checkpoint"]
        lines.append(f"- Checkpoint figure at step {f['step']}: {f['value']:.4g}, lower is "
                     f"better: {f['definition']}")
    if figures["validation"]:
        v = figures["validation"]
        if "best" in v:
            lines.append(f"- Held-out validation: {v['best']:.4g} at step {v.get('best_step')}"
                         f" ({v['definition']}; started at {v.get('start', float('nan')):.4g})")
            if "lowest_step" in v:  # a lower score was refused as within the slab's noise
                lines.append(f"  (step {v['lowest_step']} scored {v['lowest']:.4g}, a gain within "
                             "the held-out noise, so the starting generator was kept)")
    if figures["evaluation"]:
        e = {k: v for k, v in figures["evaluation"].items() if k != "source"}
        lines.append(f"- Evaluation (the run's {figures['evaluation']['source']}): "
                     + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in e.items()))
    else:
        lines.append("- No evaluation report (napari-medgan evaluate) was found in the run "
                     "folder: no quality, diversity or memorization figures for this model.")
    lines.append("- No segmentation-augmentation figures (train on synthetic, test on real) "
                 "were measured for this run.")
    return lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _shape(zyx) -> str:
    return "x".join(str(int(s)) for s in zyx)


def _mm(spacing) -> str:
    return " x ".join(f"{float(s):.4g}" for s in spacing)
