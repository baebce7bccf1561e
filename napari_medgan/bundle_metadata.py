"""What a model bundle says about its model (``configs/metadata.json``): MONAI's
``network_data_format``, intensity units and range, spacing, labels, task and family, the
training record, the run's figures, and the training data as fingerprints only.

Every value here is chosen field by field from a checkpoint and its run folder; nothing is
copied wholesale, so no path, user or host name, file name or header field gets in (a
checkpoint's ``run_config`` holds the run's local paths: only its numbers and words travel).
Nothing is measured here either: a figure the run folder does not hold is None.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from napari_medgan import __version__
from napari_medgan.tasks import TASKS
from napari_medgan.training.bundle import FORMAT, FORMAT_VERSION

MODEL_VERSION = "1.0.0"  # MONAI's "version" of the model in the bundle: its first export
_UNITS = {"ct": "HU", "mr": "MR signal, arbitrary units as in the training images",
          "zscore": "the training images' units", "none": "the training images' units"}
_MODALITY = {"ct": "CT", "mr": "MR"}
INTENDED_USE = ("Research and teaching: synthetic 3D volumes for method development, data "
                "augmentation experiments and demonstrations. Not for diagnosis, treatment or "
                "any clinical decision.")


def describe_run(ckpt, model, step: int, normalizer, target, reference) -> dict:
    """What the bundle says about a checkpoint's run: ``model``, ``step``, ``normalizer``,
    ``target``, ``reference``, then ``data`` (fingerprints), ``labels``, ``training`` (steps,
    wall time, settings) and ``figures``, from the checkpoint and its run folder."""
    run_dir = _run_folder(Path(ckpt.path))
    raw = ckpt.state.get("run_config")
    raw = raw if isinstance(raw, dict) else {}
    return {"model": model, "step": step, "normalizer": normalizer, "target": target,
            "reference": reference,
            "data": describe_data(raw, model, reference, normalizer, target, run_dir),
            "labels": label_table(ckpt.state, model),
            "training": training_record(run_dir, step, raw),
            "figures": run_figures(ckpt.state, model, run_dir)}


def describe_data(run_config: dict, model, reference, normalizer, target,
                  run_dir: Path | None = None) -> dict:
    """Fingerprints of the training data: counts, shapes, spacing, modality; never a path,
    a file name or a header field. A count that cannot be known for sure (the run's data
    folder is gone, or was given relative to another working folder) is None."""
    data = run_config.get("data") if isinstance(run_config.get("data"), dict) else {}
    source = data.get("source")
    phantom = source == "phantom"
    count = ((int(data.get("phantom_count", 0)) or None) if phantom
             else _count_volumes(source, run_config.get("out"), run_dir))
    task = TASKS[model.task]
    modality = (str(data.get("phantom_modality", "mr")).upper() if phantom
                else _MODALITY.get(normalizer.preset, "n/a"))
    return {
        "source": ("built-in head phantom (napari_medgan.data.phantom)" if phantom
                   else "user-supplied volumes (not included)" if source else "not recorded"),
        "volumes": count,
        "reference_shape_zyx": [int(s) for s in reference.shape],
        "spacing_mm_xyz": [round(float(s), 6) for s in reference.spacing],
        "modality": modality,
        "target_modality": _MODALITY.get(target.preset, "n/a") if target is not None else None,
        "label_maps": bool(task.needs_labels),
        "paired_targets": bool(task.needs_targets),
        "intensity_preset": normalizer.preset,
    }


def _count_volumes(source: Any, out: Any, run_dir: Path | None) -> int | None:
    """How many volumes ``source`` (a folder or a file of the run) holds, when it is still
    there; only the number is kept. A relative ``source`` is only counted from the folder
    the run was started in: the one where the run's own relative ``out`` is this run."""
    from napari_medgan.io.paths import list_volume_files

    if not isinstance(source, str) or not source:
        return None
    path = Path(source)
    if not path.is_absolute():
        try:
            same_start = isinstance(out, str) and run_dir is not None and \
                Path(out).resolve() == run_dir.resolve()
        except OSError:
            same_start = False
        if not same_start:
            return None
    try:
        return len(list_volume_files(path)) if path.is_dir() else (1 if path.is_file() else None)
    except (OSError, ValueError):
        return None


def label_table(state: dict, model) -> list[dict] | None:
    """``[{"value", "name", "color"}]`` (background first) for a model that draws or takes
    label maps, else None: the one naming rule of
    :func:`~napari_medgan.training.inference.model_segments`."""
    from napari_medgan.training.inference import model_segments

    segments = model_segments(state, model)
    if segments is None:
        return None
    return [{"value": 0, "name": "background", "color": [0.0, 0.0, 0.0]}, *segments]


def intensity_of(normalizer) -> dict:
    """Units, value range and the mapping from network values back to them."""
    out: dict[str, Any] = {"preset": normalizer.preset, "units": _UNITS[normalizer.preset],
                           "normalizer": normalizer.to_dict()}
    if normalizer.preset in ("ct", "mr"):
        out.update(value_range=[normalizer.low, normalizer.high], network_range=[-1.0, 1.0],
                   to_units="value = (network + 1) / 2 * (high - low) + low")
    elif normalizer.preset == "zscore":
        out.update(value_range=[], network_range=[], to_units="value = network * std + mean")
    else:
        out.update(value_range=[], network_range=[], to_units="value = network")
    return out


def training_record(run_dir: Path | None, step: int, run_config: dict) -> dict:
    """Steps, wall time (from the run's ``history.jsonl`` when it has one) and the settings
    that are not paths."""
    wall = None
    if run_dir is not None:
        from napari_medgan.training.history import read_history

        times = [float(r["elapsed"]) for r in read_history(run_dir)
                 if r["step"] <= step and isinstance(r.get("elapsed"), (int, float))]
        wall = round(max(times), 1) if times else None
    train = run_config.get("train") if isinstance(run_config.get("train"), dict) else {}
    data = run_config.get("data") if isinstance(run_config.get("data"), dict) else {}
    data = {k: v for k, v in data.items() if k not in ("source", "labels", "target")}
    return {"steps": step, "wall_seconds": wall,
            "settings": {"train": _plain(train), "data": _plain(data)}}


def _plain(section: dict) -> dict:
    """Numbers, switches and words of a config section; anything that could be a path is
    left out."""
    out = {}
    for key, value in section.items():
        if isinstance(value, (bool, int, float)) or value is None:
            out[key] = value
        elif isinstance(value, str) and not any(c in value for c in "/\\~") and len(value) < 40:
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
            out[key] = list(value)
    return out


def run_figures(state: dict, model, run_dir: Path | None) -> dict:
    """The figures this run has: the checkpoint's own figure, the held-out validation of a
    conditional run, and an evaluation report found in the run folder; None where absent.
    Nothing is measured here."""
    figures: dict[str, Any] = {"checkpoint": None, "validation": None, "evaluation": None,
                               "augmentation": None}
    metric = state.get("metric")
    if isinstance(metric, (int, float)) and not isinstance(metric, bool) and math.isfinite(metric):
        figures["checkpoint"] = {"value": float(metric), "step": state.get("step"),
                                 "lower_is_better": True,
                                 "definition": _metric_definition(model)}
    validation = state.get("validation")
    if isinstance(validation, dict) and validation:
        figures["validation"] = {"definition": "mean absolute error (normalised units) on a "
                                 "held-out slab of the training volumes", **_numbers(validation)}
    figures["evaluation"] = _evaluation(run_dir)
    return figures


def _metric_definition(model) -> str:
    if model.conditional:
        return "mean absolute error (normalised units) of the EMA generator on fixed training " \
               "conditions against their targets"
    return "Wasserstein-1 distance between intensity histograms of fixed-seed samples and " \
           "real training patches (normalised units)"


def _evaluation(run_dir: Path | None) -> dict | None:
    """Headline numbers of ``napari-medgan evaluate``'s ``report.json`` in the run folder, or
    of the demo's ``figures.json`` beside it when that names this run's checkpoint."""
    if run_dir is None:
        return None
    for path, key in ((run_dir / "report.json", None), (run_dir / "figures.json", "quality"),
                      (run_dir.parent / "figures.json", "quality")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if key is None:
            from napari_medgan.metrics.report import summarize_report

            try:
                summary = summarize_report(doc)
            except (KeyError, TypeError, AttributeError):
                continue
        else:
            checkpoint = str(doc.get("checkpoint") or "")
            if not checkpoint or not _inside(Path(checkpoint), run_dir):
                continue
            summary = doc.get(key) if isinstance(doc.get(key), dict) else {}
        numbers = _numbers(summary)
        if isinstance(summary.get("memorized"), str) and "/" in summary["memorized"]:
            numbers["memorized"] = summary["memorized"].split(" (")[0]
        if numbers:
            return {"source": path.name, **numbers}
    return None


def _numbers(mapping: dict) -> dict:
    return {str(k): (round(float(v), 6) if isinstance(v, float) else v)
            for k, v in mapping.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v))}


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (OSError, ValueError):
        return False


def _run_folder(checkpoint_dir: Path) -> Path | None:
    """The run folder of a checkpoint at ``<run>/checkpoints/<name>``, else None."""
    parent = checkpoint_dir.parent
    return parent.parent if parent.name == "checkpoints" else None


# --------------------------------------------------------------------------- metadata.json
def network_data_format(model, normalizer, target, labels: list[dict] | None) -> dict:
    """MONAI's ``network_data_format``: the generator's inputs and outputs. Spatial shapes
    are in tensor order ``(D, H, W)`` = array ``(z, y, x)``."""
    from napari_medgan.models import channels_for, get_model, patch_shape

    task = TASKS[model.task]
    first, out_channels = channels_for(model)
    shape = [int(s) for s in patch_shape(model)]
    whole = hasattr(get_model(model.name), "patch_shape")  # the family generates whole volumes
    out_norm = target or normalizer

    def image(norm, channels: int, defs: dict, patch: bool) -> dict:
        return {"type": "image", "format": "magnitude",
                "modality": _MODALITY.get(norm.preset, "n/a"), "num_channels": channels,
                "spatial_shape": shape, "dtype": "float32",
                "value_range": [-1.0, 1.0] if norm.preset in ("ct", "mr") else [],
                "is_patch_data": patch, "channel_def": defs}

    def label_maps(count: int, patch: bool, one_hot: bool) -> dict:
        names = {str(i): (labels[i]["name"] if labels and i < len(labels) else f"label {i}")
                 for i in range(count)}
        # a condition is one-hot; drawn labels are scores whose argmax is the label
        return {"type": "image", "format": "labels", "modality": "n/a", "num_channels": count,
                "spatial_shape": shape, "dtype": "float32",
                "value_range": [0.0, 1.0] if one_hot else [], "is_patch_data": patch,
                "channel_def": names}

    if not task.conditional:
        inputs = {"latent": {"type": "tuples", "format": "latent", "modality": "n/a",
                             "num_channels": 0, "spatial_shape": [int(first)],
                             "dtype": "float32", "value_range": [], "is_patch_data": False,
                             "channel_def": {}, "distribution": "standard normal"}}
    elif task.condition == "labels":
        inputs = {"labels": label_maps(int(first), True, one_hot=True)}
    elif task.condition == "image+mask":
        inputs = {"image": image(normalizer, 2, {"0": "image, the region filled in from its "
                                                 "surroundings", "1": "mask (1 = fill in)"}, True)}
    else:
        inputs = {"image": image(normalizer, 1, {"0": "image"}, True)}
    outputs = {"image": {**image(out_norm, 1, {"0": "image"}, task.conditional or not whole),
                         "tensor_channels": [0]}}
    if task.outputs_labels:
        count = out_channels - 1
        outputs["labels"] = {**label_maps(count, not whole, one_hot=False),
                             "tensor_channels": list(range(1, out_channels))}
    return {"inputs": inputs, "outputs": outputs,
            "tensor_layout": f"(B, C, D, H, W) = array (z, y, x); the generator returns one "
                             f"tensor of {out_channels} channel(s) (tensor_channels)"}


def build_metadata(info: dict) -> dict:
    """``configs/metadata.json``: MONAI's keys, then napari-medgan's (format, model, intensity,
    geometry, labels, data fingerprints, training record, figures)."""
    import numpy
    import safetensors
    import torch

    try:
        import monai

        monai_version = monai.__version__
    except ImportError:  # pragma: no cover - MONAI is a dependency
        monai_version = None
    model, task = info["model"], TASKS[info["model"].task]
    plain_task = f"{model.task}: {task.summary} (3D, {info['data']['modality']})"
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "napari_medgan_version": __version__,
        "version": MODEL_VERSION,
        "changelog": {MODEL_VERSION: f"exported at training step {info['step']}"},
        "monai_version": monai_version, "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "optional_packages_version": {"napari-medgan": __version__,
                                      "safetensors": safetensors.__version__},
        "name": info["name"],
        "task": plain_task,
        "description": f"A {model.name} generator trained with napari-medgan: {task.summary}. "
                       "Weights are safetensors (models/model.safetensors); "
                       "models/model.json holds what loading needs.",
        "authors": "not stated",
        "copyright": "not stated",
        "license": info["license"],
        "intended_use": INTENDED_USE,
        "data_source": f"fingerprints only: {info['data']['source']}",
        "network_data_format": network_data_format(model, info["normalizer"], info["target"],
                                                   info["labels"]),
        "model": {"family": model.name, "task": model.task, "task_summary": task.summary,
                  "conditional": model.conditional},
        "intensity": intensity_of(info["normalizer"]),
        "output_intensity": intensity_of(info["target"] or info["normalizer"]),
        "spacing_mm_xyz": [float(s) for s in info["reference"].spacing],
        "labels": info["labels"],
        "data": info["data"],
        "training": info["training"],
        "figures": info["figures"],
    }
