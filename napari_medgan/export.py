"""Augment an annotated dataset: write synthetic image + label pairs as an nnU-Net v2 raw dataset.

Layout (nnU-Net v2, Isensee et al. 2021, "nnU-Net: a self-configuring method for
deep learning-based biomedical image segmentation", Nature Methods 18(2))::

    <out_dir>/Dataset501_MedGANSynthetic/
        imagesTr/syn_000_0000.nii.gz     channel 0000 of case syn_000
        labelsTr/syn_000.nii.gz          its label map, same grid and affine
        dataset.json                     channel_names, labels, numTraining, file_ending
        medgan_manifest.json             which case is synthetic or real, and from what

Pairs come from a joint model (``dcgan3d``, task ``joint``: image and label map
drawn together) or from a ``label2image`` model (``pix2pix3d``) applied to given
label maps, whose geometry the synthetic image takes. Real cases can be mixed in.
The dataset is assembled in a hidden folder beside its target and renamed into
place, so a crash never leaves half a dataset under the real name.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_medgan import __version__
from napari_medgan.io import (
    Volume,
    VolumeError,
    atomic_write_text,
    list_volume_files,
    load_volume,
    save_volume,
)

MANIFEST_FILE = "medgan_manifest.json"
MANIFEST_FORMAT = "napari-medgan-nnunet-manifest"
FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")
#: Normaliser preset -> nnU-Net channel name (nnU-Net picks its normalisation from the name:
#: "CT" = dataset-wide HU clipping + z-score, anything else = per-image z-score).
PRESET_CHANNEL_NAMES = {"ct": "CT", "mr": "MR", "zscore": "zscore", "none": "zscore"}
# Geometry tolerance when pairing an image with its label map (nnU-Net's check is as strict).
_RTOL, _ATOL = 1e-5, 1e-5
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_DATASET_RE = re.compile(r"^Dataset\d{3}_.+$")


class ExportError(ValueError):
    """An export that cannot be written as asked; the message names the dataset or case."""


# ----------------------------------------------------------------------------- inputs
def _expand(items: Any, what: str) -> list[Any]:
    """A folder, a path, a Volume or a list of them -> a flat list of Volumes and file paths."""
    if items is None:
        return []
    if isinstance(items, (str, os.PathLike, Volume)):
        items = [items]
    out: list[Any] = []
    for item in items:
        if isinstance(item, Volume):
            out.append(item)
            continue
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"{what}: {path}: no such file or folder")
        out.extend(list_volume_files(path) if path.is_dir() else [path])
    return out


def _load(item: Any, is_label: bool) -> Volume:
    return item if isinstance(item, Volume) else load_volume(item, is_label=is_label)


def _describe_source(item: Any) -> str | None:
    return str(item) if not isinstance(item, Volume) else item.source


def _label_map(label_names: Any, num_classes: int, segments: list | None) -> dict[int, str]:
    """int value -> name, background first: ``label_names`` (list or dict) when given, else
    the model's segment names (:func:`~napari_medgan.training.inference.model_segments`)."""
    if label_names is None:
        names = {0: "background", **{int(s["value"]): str(s["name"]) for s in segments or []}}
        names.update({i: f"label_{i}" for i in range(num_classes) if i not in names})
    elif isinstance(label_names, Mapping):
        names = {int(k): str(v) for k, v in label_names.items()}
        names.setdefault(0, "background")
    else:
        listed = [str(v) for v in label_names]
        if len(listed) == num_classes - 1:  # names of the foreground classes only
            listed = ["background", *listed]
        if len(listed) != num_classes:
            raise ExportError(f"label_names: expected {num_classes - 1} (foreground) or "
                              f"{num_classes} names for a model with {num_classes} classes, "
                              f"got {len(listed)}")
        names = dict(enumerate(listed))
    names[0] = "background"  # nnU-Net requires it
    if sorted(names) != list(range(len(names))):
        raise ExportError(f"label_names: values must be consecutive from 0, got {sorted(names)}")
    if len(set(names.values())) != len(names):
        raise ExportError(f"label_names: names must be unique, got {list(names.values())}")
    return names


# ----------------------------------------------------------------------------- pairs
def _same_geometry(a: Volume, b: Volume) -> str | None:
    """None when ``a`` and ``b`` share grid and placement, else what differs."""
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape} (z, y, x)"
    for name in ("spacing", "origin", "direction"):
        va, vb = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        if not np.allclose(va, vb, rtol=_RTOL, atol=_ATOL):
            return f"{name} {np.round(va, 6).tolist()} vs {np.round(vb, 6).tolist()}"
    return None


def _prepare_pair(case: str, image: Volume, label: Volume,
                  allowed: set[int]) -> tuple[Volume, Volume]:
    """Validate one case and return it ready to write (label on the image's exact geometry)."""
    diff = _same_geometry(image, label)
    if diff is not None:
        raise ExportError(f"case {case}: image and label map differ in geometry: {diff}")
    lab = np.asarray(label.array)
    if lab.dtype.kind not in "biu":
        if not np.array_equal(lab, np.round(lab)):
            raise ExportError(f"case {case}: label map holds non-integer values")
        lab = np.round(lab).astype(np.int64)
    found = {int(v) for v in np.unique(lab)}
    if not found <= allowed:
        raise ExportError(f"case {case}: label values {sorted(found - allowed)} are not in "
                          f"dataset.json labels {sorted(allowed)}")
    lab = lab.astype(np.uint8 if max(allowed) < 256 else np.int32)
    # Identical headers for both files: same xform codes, same affine bit for bit.
    meta = {k: image.meta[k] for k in ("format", "qform_code", "sform_code") if k in image.meta}
    image = image.with_array(np.asarray(image.array), is_label=False, meta=meta)
    label = image.with_array(lab, is_label=True, meta=meta)
    return image, label


def pairs_refusal(model) -> str | None:
    """Why ``model`` (a ModelConfig) cannot be exported as a segmentation dataset, or None
    when it makes image + label pairs (task registry: ``pairs``): the one export rule, for
    the CLI, the API and the widgets."""
    from napari_medgan.tasks import NOT_PAIRS, TASKS

    if TASKS[model.task].pairs:
        return None
    return f"model {model.name}/{model.task} makes images only; {NOT_PAIRS}"


def check_pairs(model, where: Any = "model") -> None:
    """ExportError naming ``where`` unless ``model`` makes image + label pairs
    (:func:`pairs_refusal`)."""
    reason = pairs_refusal(model)
    if reason is not None:
        raise ExportError(f"{where}: {reason}")


def _synthetic_pairs(loaded, n: int | None, seed: int, conditions: list[Any]):
    """Yield ``(image, label, info)`` for each synthetic case."""
    import torch

    from napari_medgan.tasks import TASKS
    from napari_medgan.training.inference import generate, image_stage, synthesize_from

    model = loaded.model
    check_pairs(model, loaded.path)
    # label maps given to a two-stage pair model go through its image stage alone
    from_maps = not TASKS[model.task].outputs_labels or \
        (bool(conditions) and image_stage(loaded) is not None)
    if not from_maps:
        if conditions:
            raise ExportError(f"{loaded.path}: a joint model draws its own label maps; "
                              "conditions are for label2image and two-stage (twostage3d) "
                              "models")
        if n is None or int(n) < 1:
            raise ExportError(f"n: a joint model needs a sample count >= 1, got {n!r}")
        images, labels = generate(loaded, int(n), seed=int(seed))
        for i, (img, lab) in enumerate(zip(images, labels)):
            yield img, lab, {"sample_index": i, "condition": None}
    else:  # the label maps are the conditions (of the model, or of its image stage)
        if not conditions:
            raise ExportError(f"{loaded.path}: a label2image model needs label maps "
                              "(conditions) to synthesize images from")
        count = len(conditions) if n is None else int(n)
        if not 1 <= count <= len(conditions):
            raise ExportError(f"n: {n} cases asked but {len(conditions)} condition label map(s) "
                              "given (one synthetic case per label map; the model is "
                              "deterministic, repeating a map would repeat the image)")
        torch.manual_seed(int(seed))
        for i, item in enumerate(conditions[:count]):
            lab = _load(item, is_label=True)
            img = synthesize_from(loaded, lab)
            yield img, lab, {"sample_index": i, "condition": _describe_source(item)}


# ----------------------------------------------------------------------------- export
def export_nnunet_dataset(
    out_dir: str | Path, *, checkpoint: str | Path, n: int | None, seed: int = 0,
    dataset_id: int = 501, name: str = "MedGANSynthetic", conditions: Any = None,
    real_images: Any = None, real_labels: Any = None, label_names: Any = None,
    channel_name: str | None = None, file_ending: str = ".nii.gz", overwrite: bool = False,
    device: str = "auto",
) -> dict:
    """Write synthetic (and optionally real) image + label pairs as an nnU-Net v2 raw dataset.

    Parameters
    ----------
    out_dir : str or Path
        The nnU-Net raw folder (``$nnUNet_raw``); ``Dataset{ID:03d}_{name}`` is created in it.
    checkpoint : str or Path
        Run directory or checkpoint of a ``dcgan3d``/``joint`` or ``pix2pix3d``/``label2image``
        model.
    n : int or None
        Synthetic cases. Joint models: required. label2image: at most one per condition;
        None = one per condition.
    seed : int
        Sampling seed (same seed, same cases).
    dataset_id, name : int, str
        nnU-Net dataset number (1-999) and name (letters, digits, ``_``, ``-``).
    conditions : list of Volume or paths, or a folder
        Label maps (real or edited) for a label2image model; each synthetic image takes the
        geometry of its label map, and the label map is written as its label.
    real_images, real_labels : lists of Volume or paths, or folders
        Real cases to mix in, paired in order (sorted file names for folders); copied with
        their geometry.
    label_names : list or dict, optional
        Class names (``{1: "tumour"}`` or ``["tumour"]``); default: the model's segment
        names (those of its training label maps, the phantom's tissues for a phantom run,
        else ``Segment_1``, ``Segment_2`` ...).
    channel_name : str, optional
        ``channel_names["0"]``; default from the model's intensity preset (``CT``, ``MR``...).
    file_ending : str
        ``.nii.gz`` (default), ``.nii``, ``.nrrd`` or ``.mha``.
    overwrite : bool
        Replace an existing dataset folder (only one holding a ``dataset.json`` or our manifest).
    device : str
        Where the generator runs (``auto``, ``cpu``, ``cuda``...).

    Returns
    -------
    dict
        ``dataset_dir`` (Path), ``dataset_json`` and ``manifest`` (the written dicts).

    Raises
    ------
    ExportError
        Existing dataset without ``overwrite``, bad ID/name/ending, a model that makes no
        label maps, a case whose image and label differ in geometry or holds unknown labels
        (the message names the case).
    """
    from napari_medgan.training.inference import load_generator

    dataset_id = int(dataset_id)
    if not 1 <= dataset_id <= 999:
        raise ExportError(f"dataset_id: expected 1..999 (three digits), got {dataset_id}")
    if not _NAME_RE.match(str(name)):
        raise ExportError(f"name: expected letters, digits, '_' or '-', got {name!r}")
    if file_ending not in FILE_ENDINGS:
        raise ExportError(f"file_ending: expected one of {FILE_ENDINGS}, got {file_ending!r}")
    target = Path(out_dir) / f"Dataset{dataset_id:03d}_{name}"
    _refuse_existing(target, overwrite)
    images_in, labels_in = _expand(real_images, "real_images"), _expand(real_labels, "real_labels")
    if len(images_in) != len(labels_in):
        raise ExportError(f"real cases: {len(images_in)} image(s) but {len(labels_in)} label "
                          "map(s); give one label map per image")
    conditions = _expand(conditions, "conditions")

    loaded = load_generator(checkpoint, device=device)
    names = _label_map(label_names, int(loaded.model.num_classes), loaded.segments)
    allowed = set(names)
    preset = getattr(loaded.output_normalizer, "preset", "none")
    channel = channel_name or PRESET_CHANNEL_NAMES.get(preset, "zscore")
    ckpt = {"path": str(Path(loaded.path).resolve()), "step": loaded.step,
            "model": loaded.model.name, "task": loaded.model.task,
            "generator_sha256": weights_sha256(loaded.generator)}

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{target.name}.tmp-{secrets.token_hex(4)}"
    cases: list[dict] = []
    try:
        def write(case: str, image: Volume, label: Volume, info: dict) -> None:
            image, label = _prepare_pair(case, image, label, allowed)
            save_volume(image, staging / "imagesTr" / f"{case}_0000{file_ending}")
            save_volume(label, staging / "labelsTr" / f"{case}{file_ending}")
            cases.append({"case": case, **info,
                          "image": f"imagesTr/{case}_0000{file_ending}",
                          "label": f"labelsTr/{case}{file_ending}",
                          "shape": list(image.shape), **image.geometry_dict()})

        for img, lab, info in _synthetic_pairs(loaded, n, seed, conditions):
            write(f"syn_{info['sample_index']:03d}", img, lab,
                  {"kind": "synthetic", "checkpoint": ckpt["path"], "step": ckpt["step"],
                   "seed": int(seed), **info})
        for i, (img_item, lab_item) in enumerate(zip(images_in, labels_in)):
            write(f"real_{i:03d}", _load(img_item, False), _load(lab_item, True),
                  {"kind": "real", "image_source": _describe_source(img_item),
                   "label_source": _describe_source(lab_item)})

        dataset_json = {
            "name": name,
            "description": (f"{sum(c['kind'] == 'synthetic' for c in cases)} synthetic cases from "
                            f"{ckpt['model']}/{ckpt['task']} (napari-medgan), "
                            f"{sum(c['kind'] == 'real' for c in cases)} real cases; "
                            f"see {MANIFEST_FILE}"),
            "channel_names": {"0": channel},
            "labels": {label: value for value, label in sorted(names.items())},
            "numTraining": len(cases),
            "file_ending": file_ending,
        }
        manifest = {
            "format": MANIFEST_FORMAT, "format_version": 1, "package_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dataset": target.name,
            "checkpoint": ckpt, "seed": int(seed), "cases": cases,
        }
        atomic_write_text(staging / "dataset.json", json.dumps(dataset_json, indent=2) + "\n")
        atomic_write_text(staging / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
        _move_into_place(staging, target, overwrite)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return {"dataset_dir": target, "dataset_json": dataset_json, "manifest": manifest}


def weights_sha256(module) -> str:
    """SHA-256 over a network's weights: each state-dict entry's name, dtype, shape and
    bytes, in name order. Names the model a dataset came from wherever its files have moved
    (the manifest's ``path`` is only where it was on the exporting machine)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _refuse_existing(target: Path, overwrite: bool) -> None:
    if not target.exists():
        return
    if not overwrite:
        raise ExportError(f"{target}: dataset folder already exists; choose another "
                          "--dataset-id/--name or pass overwrite=True (--overwrite) to replace it")
    ours = (target / "dataset.json").exists() or (target / MANIFEST_FILE).exists()
    if not target.is_dir() or not (ours or not any(target.iterdir())):
        raise ExportError(f"{target}: exists and is not an nnU-Net dataset folder; "
                          "refusing to replace it")


def _move_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    _refuse_existing(target, overwrite)  # again: another process may have written it meanwhile
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
        os.replace(target, aside)
    os.replace(staging, target)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


# ----------------------------------------------------------------------------- check
def _label_values(labels: dict) -> set[int]:
    values: set[int] = set()
    for v in labels.values():  # region-based datasets map a name to a list of labels
        values.update(int(x) for x in (v if isinstance(v, (list, tuple)) else [v]))
    return values


def check_nnunet_dataset(dataset_dir: str | Path) -> list[str]:
    """Problems that would stop ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity``.

    Checks the folder name, ``dataset.json`` (required keys, ``background: 0``, consecutive
    labels), that every label file has its ``_0000``... channel files and vice versa, file
    endings, ``numTraining``, label values, and that image and label of each case share shape,
    spacing, origin and direction. Returns an empty list for a valid dataset.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        return [f"{root}: no such dataset folder"]
    problems: list[str] = []
    if not _DATASET_RE.match(root.name):
        problems.append(f"{root.name}: folder name should be DatasetXXX_Name (three digits)")
    try:
        meta = json.loads((root / "dataset.json").read_text())
    except OSError:
        return problems + [f"{root}/dataset.json: missing"]
    except ValueError as exc:
        return problems + [f"{root}/dataset.json: invalid JSON ({exc})"]
    required = ("channel_names", "labels", "numTraining", "file_ending")
    missing = [k for k in required if k not in meta]
    if missing:
        return problems + [f"dataset.json: missing key(s) {missing}"]
    ending, labels = str(meta["file_ending"]), meta["labels"]
    try:
        allowed = _label_values(labels)
        channels = sorted(int(k) for k in meta["channel_names"])
    except (TypeError, ValueError, AttributeError):
        return problems + ["dataset.json: labels must map names to integers and channel_names "
                           "must have integer keys"]
    if labels.get("background") != 0:
        problems.append("dataset.json: labels must contain \"background\": 0")
    if sorted(allowed) != list(range(len(allowed))):
        problems.append(f"dataset.json: label values must be consecutive from 0, got "
                        f"{sorted(allowed)}")
    folders = {k: root / k for k in ("imagesTr", "labelsTr")}
    for key, folder in folders.items():
        if not folder.is_dir():
            problems.append(f"{key}: missing folder")
    if problems and any(not f.is_dir() for f in folders.values()):
        return problems

    def files(folder: Path) -> list[str]:
        return sorted(p.name for p in folder.iterdir() if p.is_file()
                      and not p.name.startswith("."))

    cases = []
    for fname in files(folders["labelsTr"]):
        if not fname.endswith(ending):
            problems.append(f"labelsTr/{fname}: does not end with file_ending {ending}")
        else:
            cases.append(fname[: -len(ending)])
    for fname in files(folders["imagesTr"]):
        if not fname.endswith(ending):
            problems.append(f"imagesTr/{fname}: does not end with file_ending {ending}")
            continue
        m = re.match(r"^(.+)_(\d{4})$", fname[: -len(ending)])
        if m is None:
            problems.append(f"imagesTr/{fname}: name must end with a channel suffix _0000")
        elif int(m.group(2)) not in channels:
            problems.append(f"imagesTr/{fname}: channel {m.group(2)} not in channel_names")
        elif m.group(1) not in cases:
            problems.append(f"imagesTr/{fname}: no label file labelsTr/{m.group(1)}{ending}")
    if meta["numTraining"] != len(cases):
        problems.append(f"dataset.json: numTraining is {meta['numTraining']} but labelsTr "
                        f"holds {len(cases)} case(s)")
    for case in cases:
        problems += _check_case(root, case, channels, ending, allowed)
    return problems


def _check_case(root: Path, case: str, channels: list[int], ending: str,
                allowed: set[int]) -> list[str]:
    try:
        label = load_volume(root / "labelsTr" / f"{case}{ending}", is_label=True)
    except (VolumeError, OSError) as exc:
        return [f"case {case}: label unreadable: {exc}"]
    problems = []
    extra = sorted({int(v) for v in np.unique(label.array)} - allowed)
    if extra:
        problems.append(f"case {case}: label values {extra} not in dataset.json labels")
    for c in channels:
        path = root / "imagesTr" / f"{case}_{c:04d}{ending}"
        if not path.exists():
            problems.append(f"case {case}: missing image imagesTr/{path.name}")
            continue
        try:
            image = load_volume(path, is_label=False)
        except (VolumeError, OSError) as exc:
            problems.append(f"case {case}: image unreadable: {exc}")
            continue
        diff = _same_geometry(image, label)
        if diff is not None:
            problems.append(f"case {case}: image {path.name} and label differ: {diff}")
    return problems


# ----------------------------------------------------------------------------- CLI
def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``export-dataset`` to the ``napari-medgan`` sub-command parsers."""
    p = subparsers.add_parser(
        "export-dataset", help="write synthetic (+ real) image/label pairs as an nnU-Net dataset",
        description="Write synthetic image + label pairs (joint model, or label2image model on "
                    "given label maps), optionally with real cases, in the nnU-Net v2 raw "
                    "layout, then check the result.")
    p.add_argument("checkpoint", type=Path, help="run directory or checkpoint directory")
    p.add_argument("--n", type=int, help="synthetic cases (joint: required; label2image: "
                   "default one per condition)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--out", type=Path, required=True,
                   help="nnU-Net raw folder ($nnUNet_raw); DatasetXXX_NAME is created inside")
    p.add_argument("--conditions", type=Path, nargs="+",
                   help="label maps (files or folders) for a label2image model")
    p.add_argument("--real-images", type=Path, help="folder of real images to mix in")
    p.add_argument("--real-labels", type=Path, help="folder of their label maps (same order)")
    p.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset ID (1-999)")
    p.add_argument("--name", default="MedGANSynthetic", help="dataset name")
    p.add_argument("--label-names", help="comma-separated foreground class names (1, 2, ...)")
    p.add_argument("--channel-name", help="channel_names['0'] (default from the model: CT, MR)")
    p.add_argument("--file-ending", default=".nii.gz", choices=FILE_ENDINGS)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.set_defaults(func=cmd_export_dataset)
    return p


def cmd_export_dataset(args: argparse.Namespace) -> int:
    """Run ``export-dataset``; 0 when the written dataset passes the check, else 1."""
    if (args.real_images is None) != (args.real_labels is None):
        raise ExportError("--real-images and --real-labels go together")
    names = [s.strip() for s in args.label_names.split(",")] if args.label_names else None
    result = export_nnunet_dataset(
        args.out, checkpoint=args.checkpoint, n=args.n, seed=args.seed,
        dataset_id=args.dataset_id, name=args.name, conditions=args.conditions,
        real_images=args.real_images, real_labels=args.real_labels, label_names=names,
        channel_name=args.channel_name, file_ending=args.file_ending,
        overwrite=args.overwrite, device=args.device)
    dataset = result["dataset_dir"]
    kinds = [c["kind"] for c in result["manifest"]["cases"]]
    print(f"{dataset} ({kinds.count('synthetic')} synthetic, {kinds.count('real')} real cases)")
    problems = check_nnunet_dataset(dataset)
    if problems:
        print(f"check: {len(problems)} problem(s)")
        for line in problems:
            print(f"  - {line}")
        return 1
    print(f"check: OK; next: nnUNetv2_plan_and_preprocess -d {args.dataset_id} "
          "--verify_dataset_integrity")
    return 0
