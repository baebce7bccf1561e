"""Model bundles: a trained generator shared as a folder or a ``.zip``, in the MONAI bundle
layout (``docs.monai.io``, "MONAI Bundle Specification")::

    NAME/                           NAME.zip holds the same files under NAME/
        configs/metadata.json       MONAI metadata (network_data_format ...), intensity units,
                                    labels, task and family, training record, data fingerprints
        models/model.safetensors    the EMA generator's weights, plain state_dict keys
        models/model.json           what loading needs: model_config, model_layout, step,
                                    normalizer(s), geometry, the weights' size and SHA-256
        docs/README.md              model card (Hugging Face front matter)

``napari-medgan export-model`` writes bundles (:mod:`napari_medgan.export_model`); this module
reads them. A bundle is read into a :class:`~napari_medgan.training.checkpoint.Checkpoint`
whose ``ema`` and ``generator`` modules are the EMA weights (no discriminator, no optimizer),
so sampling and fine-tuning check it exactly as they check a checkpoint. Nothing is unpickled
and nothing is extracted to disk: a zip's members are validated by name (no absolute paths,
no ``..``, no links) and size, then read into memory.
"""

from __future__ import annotations

import hashlib
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

FORMAT = "napari-medgan-bundle"
FORMAT_VERSION = 1
METADATA_FILE = "configs/metadata.json"
MODEL_FILE = "models/model.json"
WEIGHTS_FILE = "models/model.safetensors"
README_FILE = "docs/README.md"
#: Fields of ``models/model.json``; all but ``target_normalizer`` and ``package_version``
#: are required, any other is refused (a newer writer must raise ``format_version``).
MODEL_FIELDS = ("format", "format_version", "package_version", "model_config", "model_layout",
                "step", "normalizer", "target_normalizer", "geometry", "weights",
                "module_metadata", "segments")
_OPTIONAL = ("package_version", "target_normalizer", "module_metadata", "segments")
MAX_JSON_BYTES = 16 << 20
MAX_BUNDLE_BYTES = 16 << 30  # uncompressed members of a zip, all together
MAX_MEMBERS = 256


def is_bundle(path: Any) -> bool:
    """Whether ``path`` looks like a model bundle: a folder with ``configs/metadata.json`` or
    ``models/model.json``, or a ``.zip`` listing the first (only its directory is read), so
    that a damaged bundle is refused as one. Cheap enough for the napari reader, which asks
    about every path dropped on the viewer."""
    if not isinstance(path, (str, Path)):
        return False
    path = Path(path)
    try:
        if path.is_dir():
            return (path / METADATA_FILE).is_file() or (path / MODEL_FILE).is_file()
        if path.suffix.lower() != ".zip" or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, ValueError, zipfile.BadZipFile):
        return False
    return any(n == METADATA_FILE or n.endswith("/" + METADATA_FILE) for n in names)


def load_checkpoint_or_bundle(path: str | Path, map_location: str = "cpu"):
    """A :class:`~napari_medgan.training.checkpoint.Checkpoint` from a run folder, a
    checkpoint or a model bundle (folder or ``.zip``)."""
    from napari_medgan.training.checkpoint import load_checkpoint

    if is_bundle(path) or (Path(path).suffix.lower() == ".zip" and Path(path).is_file()):
        return load_bundle(path, map_location)
    return load_checkpoint(path, map_location)


def load_bundle(path: str | Path, map_location: str = "cpu"):
    """Read and check a model bundle (folder or ``.zip``).

    Returns
    -------
    Checkpoint
        ``state`` holds model.json's fields (model_config, model_layout, step, normalizer,
        target_normalizer, geometry); ``ema`` and ``generator`` are the weights;
        ``meta["bundle"]`` is ``path``. Its ``path`` is the bundle's ``models/model.json``,
        so that every later refusal names that file and the field.

    Raises
    ------
    CheckpointError
        One line naming the file and the field: not a bundle, a newer ``format_version``, a
        missing, unknown or invalid field, weights that are not the recorded ones (size,
        SHA-256) or not safetensors; for a zip also unsafe member names (absolute, ``..``,
        links), duplicates, or members too large.
    """
    import torch

    from napari_medgan.training.checkpoint import Checkpoint, parse_json

    path = Path(path)
    files, root = _read_files(path)
    _check_format(parse_json(files[METADATA_FILE], root / METADATA_FILE), root / METADATA_FILE)
    where = root / MODEL_FILE
    doc = parse_json(files[MODEL_FILE], where)
    _check_model_doc(doc, where)
    tensors = _read_weights(files[WEIGHTS_FILE], doc["weights"], root / WEIGHTS_FILE, where)
    if torch.device(map_location).type != "cpu":
        tensors = {k: v.to(map_location) for k, v in tensors.items()}
    names = ("ema", "generator")  # fine-tuning starts the generator from the EMA weights too
    metadata = doc.get("module_metadata") or {}
    state = {k: doc[k] for k in ("model_config", "model_layout", "step", "normalizer",
                                 "target_normalizer", "geometry", "segments") if k in doc}
    return Checkpoint(
        path=where, state=state,
        tensors={f"{name}.{key}": value for name in names for key, value in tensors.items()},
        meta={"format": FORMAT, "format_version": doc["format_version"],
              "package_version": doc.get("package_version"), "optimizers": {},
              "modules": {name: {"class": "bundle", "tensors": len(tensors),
                                 "metadata": metadata} for name in names},
              "bundle": str(path)})


# --------------------------------------------------------------------------- files
def _read_files(path: Path) -> tuple[dict[str, bytes], Path]:
    """``({relative name: bytes} of the three files loading needs, root for messages)``."""
    from napari_medgan.training.checkpoint import CheckpointError

    needed = (METADATA_FILE, MODEL_FILE, WEIGHTS_FILE)
    if path.is_dir():
        missing = [n for n in needed if not (path / n).is_file()]
        if missing:
            raise CheckpointError(f"{path / missing[0]}: missing; a napari-medgan model bundle "
                                  f"holds {', '.join(needed)}")
        for name in (METADATA_FILE, MODEL_FILE):
            if (path / name).stat().st_size > MAX_JSON_BYTES:
                raise CheckpointError(f"{path / name}: larger than {MAX_JSON_BYTES >> 20} MiB; "
                                      "not a bundle's JSON")
        return {n: (path / n).read_bytes() for n in needed}, path
    if not path.exists():
        raise CheckpointError(f"{path}: no such model bundle")
    return _read_zip(path)


def _read_zip(path: Path) -> tuple[dict[str, bytes], Path]:
    from napari_medgan.training.checkpoint import CheckpointError

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        _check_members(path, infos)
        prefix = _bundle_prefix(path, [i.filename for i in infos])
        by_name = {i.filename: i for i in infos}
        files = {}
        for name in (METADATA_FILE, MODEL_FILE, WEIGHTS_FILE):
            info = by_name.get(prefix + name)
            if info is None or info.is_dir():
                raise CheckpointError(f"{path / prefix / name}: missing from the archive")
            if name != WEIGHTS_FILE and info.file_size > MAX_JSON_BYTES:
                raise CheckpointError(f"{path / prefix / name}: larger than "
                                      f"{MAX_JSON_BYTES >> 20} MiB; not a bundle's JSON")
            try:
                files[name] = zf.read(info)
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
                raise CheckpointError(f"{path / prefix / name}: damaged member ({exc})") from None
    return files, path / prefix if prefix else path


def _check_members(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse an archive with a member that could land outside a folder it is unpacked into
    (absolute, ``..``, a drive or backslashes), a link, a duplicate, or too many / too large
    members (the sizes are the central directory's; reads never return more)."""
    from napari_medgan.training.checkpoint import CheckpointError

    if len(infos) > MAX_MEMBERS:
        raise CheckpointError(f"{path}: {len(infos)} members; a model bundle has a few "
                              f"(at most {MAX_MEMBERS})")
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        unsafe = (not name or "\\" in name or "\0" in name or name.startswith("/")
                  or ".." in parts or (parts and ":" in parts[0]))
        if unsafe:
            raise CheckpointError(f"{path}: member {name!r} is not a plain relative path "
                                  "(absolute, '..' or a drive); refusing the archive")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise CheckpointError(f"{path}: member {name!r} is a symbolic link; refusing the "
                                  "archive")
        if name in seen:
            raise CheckpointError(f"{path}: member {name!r} appears twice; refusing the archive")
        seen.add(name)
    total = sum(i.file_size for i in infos)
    if total > MAX_BUNDLE_BYTES:
        raise CheckpointError(f"{path}: members unpack to {total / 2**30:.1f} GiB, more than "
                              f"a model bundle may ({MAX_BUNDLE_BYTES >> 30} GiB)")


def _bundle_prefix(path: Path, names: list[str]) -> str:
    """``""`` when the bundle's files are at the archive's root, ``"NAME/"`` when they are in
    one top folder (the MONAI layout); CheckpointError when neither or several."""
    from napari_medgan.training.checkpoint import CheckpointError

    found = sorted(n[: -len(METADATA_FILE)] for n in names if n.endswith(METADATA_FILE)
                   and (n == METADATA_FILE or (n.endswith("/" + METADATA_FILE)
                                               and n.count("/") == METADATA_FILE.count("/") + 1)))
    if not found:
        raise CheckpointError(f"{path}: not a napari-medgan model bundle (no {METADATA_FILE} "
                              "at its root or in one top folder)")
    if len(found) > 1:
        raise CheckpointError(f"{path}: holds {len(found)} bundles ({', '.join(found)}); "
                              "a bundle archive holds one")
    return found[0]


# --------------------------------------------------------------------------- checks
def _check_format(doc: Any, where: Path) -> None:
    """``format`` is ours and ``format_version`` one this version reads."""
    from napari_medgan import __version__
    from napari_medgan.training.checkpoint import CheckpointError, _brief

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a napari-medgan model bundle (field 'format' is "
                              f"not {FORMAT!r})")
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{where}: field 'format_version' must be a whole number >= 1, "
                              f"got {_brief(version)}")
    if version > FORMAT_VERSION:
        written = doc.get("package_version") or doc.get("napari_medgan_version")
        raise CheckpointError(
            f"{where}: field 'format_version' is {version} (napari-medgan {written}), newer "
            f"than this napari-medgan {__version__} reads (up to {FORMAT_VERSION}); upgrade "
            "napari-medgan")


def _check_model_doc(doc: dict, where: Path) -> None:
    """Every field of model.json known, the required ones present, ``weights`` and
    ``module_metadata`` well formed; the rest is checked by the Checkpoint's own checks."""
    from napari_medgan.training.checkpoint import CheckpointError, _brief

    _check_format(doc, where)
    unknown = sorted(set(doc) - set(MODEL_FIELDS))
    if unknown:
        raise CheckpointError(f"{where}: unknown field {unknown[0]!r} (written by napari-medgan "
                              f"{doc.get('package_version')}); use that version or re-export")
    missing = [k for k in MODEL_FIELDS if k not in doc and k not in _OPTIONAL]
    if missing:
        raise CheckpointError(f"{where}: field {missing[0]!r} is missing")
    weights = doc["weights"]
    if not (isinstance(weights, dict) and weights.get("file") == Path(WEIGHTS_FILE).name
            and _whole(weights.get("bytes")) and isinstance(weights.get("sha256"), str)):
        raise CheckpointError(f"{where}: field 'weights' must be {{'file': "
                              f"'{Path(WEIGHTS_FILE).name}', 'bytes': N, 'sha256': HEX}}, got "
                              f"{_brief(weights)}")
    metadata = doc.get("module_metadata")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(v, dict) and all(isinstance(x, (int, float, str)) and not
                                        isinstance(x, bool) for x in v.values())
            for v in metadata.values())):
        raise CheckpointError(f"{where}: field 'module_metadata' must map module names to "
                              f"{{'version': N}} objects, got {_brief(metadata)}")


def _read_weights(data: bytes, record: dict, where: Path, model_json: Path) -> dict:
    """The tensors of ``models/model.safetensors`` once its size and SHA-256 are the ones
    model.json records (a swapped or edited weights file is refused before parsing)."""
    import safetensors.torch

    from napari_medgan.training.checkpoint import CheckpointError

    if len(data) != record["bytes"]:
        raise CheckpointError(f"{where}: {len(data)} bytes but {model_json.name} field "
                              f"'weights.bytes' records {record['bytes']}; the file is "
                              "truncated or not this bundle's")
    if sha256_hex(data) != record["sha256"].lower():
        raise CheckpointError(f"{where}: SHA-256 differs from {model_json.name} field "
                              "'weights.sha256'; the weights were changed or are not this "
                              "bundle's")
    try:
        return safetensors.torch.load(data)
    except Exception as exc:  # noqa: BLE001 - the Rust parser raises its own exception type
        raise CheckpointError(f"{where}: corrupt safetensors file ({exc})") from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

