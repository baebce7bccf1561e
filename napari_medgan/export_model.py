"""``napari-medgan export-model``: share a trained generator as a model bundle.

A bundle is a folder (or the same as ``NAME.zip``) in the MONAI bundle layout, described in
:mod:`napari_medgan.training.bundle`, which also reads it back. It holds only the EMA
generator's weights and what sampling needs, a MONAI ``metadata.json`` and a model card.

A bundle carries no absolute paths, user or host names and no source file names: the data
a run was trained on is described by fingerprints only (counts, shapes, spacing, modality),
and of the run's settings only the values that are not paths travel (a checkpoint's
``run_config`` holds the run's local paths; it is never copied). Volume headers (DICOM
patient fields included) never reach a checkpoint, hence never a bundle.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import zipfile
from pathlib import Path
from typing import Any

from napari_medgan import __version__
from napari_medgan.training.bundle import (
    FORMAT,
    FORMAT_VERSION,
    METADATA_FILE,
    MODEL_FILE,
    README_FILE,
    WEIGHTS_FILE,
    is_bundle,
    sha256_hex,
)

#: The repository's license (setup.cfg ``license``), as Hugging Face spells it.
DEFAULT_LICENSE = "bsd-3-clause"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member times: no export time, same bytes twice


def export_model(run: str | Path, out: str | Path, *, as_zip: bool = False,
                 overwrite: bool = False, license: str = DEFAULT_LICENSE,
                 recipe: list[str] | None = None, limitations: list[str] | None = None
                 ) -> Path:
    """Write the EMA generator of ``run`` as a model bundle.

    Parameters
    ----------
    run : str or Path
        Run directory (its latest checkpoint) or a checkpoint directory.
    out : str or Path
        Bundle folder to create, or ``NAME.zip`` for an archive.
    as_zip : bool
        Write ``NAME.zip`` (``.zip`` is added to ``out`` when missing).
    overwrite : bool
        Replace an existing bundle at ``out`` (never anything else).
    license : str
        The ``license`` of the model card's front matter.
    recipe : list of str, optional
        The commands that trained the model, shown in the model card so anyone can train
        it again (checked for paths of this machine like everything in the bundle).
    limitations : list of str, optional
        What the model is known not to do well (the card's "Limitations" section).

    Returns
    -------
    Path
        The bundle folder or zip, written atomically (a hidden temporary beside it, renamed).

    Raises
    ------
    CheckpointError
        The run's checkpoint is missing or does not validate.
    ValueError
        ``out`` exists (without ``overwrite``) or is not a bundle.
    """
    from napari_medgan.training.checkpoint import load_checkpoint

    out = Path(out)
    as_zip = as_zip or out.suffix.lower() == ".zip"
    if as_zip and out.suffix.lower() != ".zip":
        out = out.with_name(out.name + ".zip")
    name = out.name[:-4] if as_zip else out.name
    if not name or name.startswith(".") or name in ("..",):
        raise ValueError(f"--out: {out}: a bundle needs a visible name, e.g. my-model or "
                         "my-model.zip")
    _refuse_existing(out, overwrite)
    ckpt = load_checkpoint(run)
    for text in [*(recipe or []), *(limitations or [])]:
        home = str(Path.home())
        if len(home) > 3 and home in text or str(Path(run).resolve()) in text:
            raise ValueError(f"--recipe/--limitation: {text!r} names a folder of this machine; "
                             "write paths relative to where the commands run")
    files = bundle_files(ckpt, name, license=license, file_name=out.name, recipe=recipe,
                         limitations=limitations)
    _check_anonymous(files, [Path(run), ckpt.path, Path.home()])
    if as_zip:
        _write_zip(out, name, files)
    else:
        _write_folder(out, files)
    return out


def bundle_files(ckpt, name: str, license: str = DEFAULT_LICENSE,
                 file_name: str | None = None, recipe: list[str] | None = None,
                 limitations: list[str] | None = None) -> dict[str, bytes]:
    """The bundle's files (relative name -> bytes) from a loaded checkpoint, which is checked
    first exactly as loading checks it (:func:`~napari_medgan.training.inference.
    read_model_state`, then the weights against the model config)."""
    import safetensors.torch

    from napari_medgan.bundle_metadata import build_metadata, describe_run
    from napari_medgan.model_card import model_card
    from napari_medgan.models import build_generator
    from napari_medgan.training.checkpoint import _prepare
    from napari_medgan.training.inference import model_segments, read_model_state

    model, step, normalizer, target, reference = read_model_state(ckpt)
    ckpt.build_module("ema", lambda: build_generator(model))  # shapes, dtypes, finite values
    # one metadata key: safetensors writes its metadata map in random order, and an export
    # of the same checkpoint must give the same bytes (the SHA-256 in model.json)
    weights = safetensors.torch.save(_prepare(dict(ckpt.module_state("ema"))),
                                     metadata={"format": "pt"})
    model_doc = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__,
        "model_config": dataclasses.asdict(model),
        "model_layout": ckpt.state.get("model_layout", 1),
        "step": step, "normalizer": normalizer.to_dict(),
        "target_normalizer": target.to_dict() if target is not None else None,
        "geometry": {**reference.geometry_dict(), "shape": list(reference.shape)},
        "weights": {"file": Path(WEIGHTS_FILE).name, "bytes": len(weights),
                    "sha256": sha256_hex(weights)},
        "module_metadata": ckpt.meta.get("modules", {}).get("ema", {}).get("metadata", {}),
        "segments": model_segments(ckpt.state, model),  # names of the label values
    }
    info = {"name": name, "file": file_name or name, "license": license,
            "recipe": list(recipe or []), "limitations": list(limitations or []),
            **describe_run(ckpt, model, step, normalizer, target, reference)}
    metadata = build_metadata(info)
    return {METADATA_FILE: _json_bytes(metadata), MODEL_FILE: _json_bytes(model_doc),
            WEIGHTS_FILE: weights, README_FILE: model_card(info, metadata).encode("utf-8")}


# --------------------------------------------------------------------------- writing
def _json_bytes(doc: dict) -> bytes:
    return (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode("utf-8")


def _check_anonymous(files: dict[str, bytes], places: list[Path]) -> None:
    """A bug guard: no text file of the bundle names the run, the checkpoint or the home
    folder (the fields above never copy a path; this keeps it so)."""
    texts = {name: data.decode("utf-8") for name, data in files.items()
             if not name.endswith(".safetensors")}
    for place in places:  # absolute forms: a relative path (in a recipe) names no machine
        for form in {str(p) for p in (Path(place), Path(place).resolve()) if p.is_absolute()}:
            if len(form) < 4:
                continue
            for name, text in texts.items():
                if form in text:
                    raise RuntimeError(f"bundle {name} would name the local path {form}; "
                                       "this is a bug in napari-medgan")


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise ValueError(f"--out: {out} already exists; choose another name or add --overwrite")
    if out.is_symlink() or not is_bundle(out):
        raise ValueError(f"--out: {out} exists and is not a model bundle; refusing to replace it")


def _write_folder(out: Path, files: dict[str, bytes]) -> None:
    """The bundle folder, written under a hidden name beside ``out`` and renamed into place
    (as checkpoints are)."""
    import os

    from napari_medgan.io.atomic import default_mode
    from napari_medgan.training.checkpoint import _fsync, _write_dir

    def fill(tmp: Path) -> None:
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(path, default_mode())
        for sub in {Path(n).parent for n in files}:
            _fsync(tmp / sub)

    _write_dir(out, fill, clean=False)


def _write_zip(out: Path, name: str, files: dict[str, bytes]) -> None:
    """``NAME.zip`` with the files under ``NAME/`` (the MONAI archive layout), written to a
    hidden temporary beside it and renamed into place."""
    from napari_medgan.io.atomic import atomic_write

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as zf:
            for member, data in files.items():
                info = zipfile.ZipInfo(f"{name}/{member}", date_time=_ZIP_DATE)
                info.external_attr = 0o644 << 16
                # weights hardly compress; deflate the text
                info.compress_type = zipfile.ZIP_STORED if member == WEIGHTS_FILE \
                    else zipfile.ZIP_DEFLATED
                zf.writestr(info, data)

    atomic_write(out, write)


# --------------------------------------------------------------------------- command line
def add_export_model_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``export-model`` to the ``napari-medgan`` sub-command parsers."""
    p = subparsers.add_parser(
        "export-model", help="share a trained model as a bundle folder or .zip",
        description="Write the run's EMA generator as a self-contained model bundle (MONAI "
                    "layout: configs/metadata.json, models/model.safetensors and model.json, "
                    "docs/README.md model card). It carries no paths, user or host names; "
                    "generate, train --init and napari open it.")
    p.add_argument("run", type=Path, help="run directory or checkpoint directory")
    p.add_argument("--out", type=Path, required=True,
                   help="bundle folder to create, or NAME.zip for an archive")
    p.add_argument("--zip", action="store_true", help="write NAME.zip")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    p.add_argument("--license", default=DEFAULT_LICENSE,
                   help=f"license in the model card (default {DEFAULT_LICENSE}, napari-medgan's)")
    p.add_argument("--recipe", action="append", metavar="COMMAND",
                   help="a command that trained the model, for the model card (repeatable)")
    p.add_argument("--limitation", action="append", metavar="TEXT", dest="limitations",
                   help="a known limitation, for the model card (repeatable)")
    return p


def cmd_export_model(args: argparse.Namespace) -> int:
    """Run ``export-model``: print the bundle's path."""
    path = export_model(args.run, args.out, as_zip=args.zip, overwrite=args.overwrite,
                        license=args.license, recipe=args.recipe,
                        limitations=args.limitations)
    print(path)
    return 0
