"""File names and kinds: which suffixes are volumes, DICOM folders, and the label-map rule.

Pure path and array inspection (no image library is needed to import it).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from napari_medgan.io.volume import VolumeError

#: File suffixes read by this module (lower case; ``.seg.nrrd`` is a ``.nrrd``).
NIFTI_SUFFIXES = (".nii.gz", ".nii")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIX = ".dcm"
VOLUME_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES + (DICOM_SUFFIX,)

#: File-name words that mark a label map (see :func:`guess_is_label`).
LABEL_WORDS = frozenset(
    {"label", "labels", "labelmap", "seg", "segs", "segmentation", "segmentations", "mask", "masks"}
)
#: An integer volume with at most this many distinct values (all >= 0) is a label map.
MAX_LABEL_VALUES = 64

_FORMAT_NAMES = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
    ".dcm": "dicom",
}
# Metadata key our writers put into NRRD/MetaImage headers so label maps stay label maps.
LABEL_META_KEY = "medgan_is_label"


# ----------------------------------------------------------------------------- paths
def volume_suffix(path: str | Path) -> str | None:
    """The supported suffix of ``path`` (``'.nii.gz'``, ``'.nrrd'``...), or None."""
    name = Path(path).name.lower()
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def volume_stem(path: str | Path) -> str:
    """File name without its volume suffix (``brain.nii.gz`` -> ``brain``); a folder's name."""
    path = Path(path)
    suffix = volume_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _is_hidden_or_partial(path: Path) -> bool:
    # Our atomic writer's temporaries are ".name.XXXX.part.nii.gz"; editors leave "name~".
    name = path.name
    return name.startswith(".") or ".part" in name.lower() or name.endswith("~")


def _looks_like_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == DICOM_SUFFIX:
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"  # the DICOM Part 10 preamble magic
    except OSError:
        return False


def is_dicom_folder(folder: str | Path, max_probe: int = 64) -> bool:
    """True when ``folder`` directly holds at least one DICOM series.

    A cheap probe (a ``.dcm`` name or the ``DICM`` magic in up to ``max_probe``
    files) runs before GDCM's scan, because napari asks about every folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return False
    probed = 0
    for entry in sorted(folder.iterdir()):
        if probed >= max_probe:
            return False
        if not entry.is_file() or _is_hidden_or_partial(entry):
            continue
        probed += 1
        if _looks_like_dicom_file(entry):
            import SimpleITK as sitk

            return len(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))) > 0
    return False


def is_supported_path(path: str | Path) -> bool:
    """True for a file with a supported suffix or a folder holding a DICOM series.

    Only names are checked for files (no I/O), so napari can ask cheaply.
    """
    path = Path(path)
    if path.is_dir():
        return is_dicom_folder(path)
    return volume_suffix(path) is not None and not _is_hidden_or_partial(path)


def list_volume_files(folder: str | Path) -> list[Path]:
    """Volumes in ``folder``, sorted: supported files plus sub-folders that are DICOM series.

    Hidden files and temporaries (``.part``, ``~``) are skipped; single
    ``.dcm`` files are not listed on their own (their folder is the volume).
    A folder that is itself a DICOM series gives ``[folder]``.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise VolumeError(f"{folder}: not a folder")
    if is_dicom_folder(folder):
        return [folder]
    found = []
    for entry in sorted(folder.iterdir()):
        if _is_hidden_or_partial(entry):
            continue
        if entry.is_dir():
            if is_dicom_folder(entry):
                found.append(entry)
        elif volume_suffix(entry) not in (None, DICOM_SUFFIX):
            found.append(entry)
    return found


# ----------------------------------------------------------------------------- labels
def _name_words(path: str | Path) -> list[str]:
    # "T1_brain-mask2.nii.gz" -> ["t1", "brain", "mask"]: split on non-letters so
    # "masked"/"segment" stay whole words and do not match.
    return [w for w in re.split(r"[^a-z]+", volume_stem(path).lower()) if w]


def _sample(flat: np.ndarray, size: int = 100_000) -> np.ndarray:
    return flat[:: max(1, flat.size // size)]


def _few_distinct_values(array: np.ndarray, limit: int) -> bool:
    flat = array.ravel()
    if np.unique(_sample(flat)).size > limit:
        return False  # cheap exit for ordinary images
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo >= 1 << 16:
        return np.unique(flat).size <= limit
    # A chunked bincount is O(n) and never copies the whole volume to int64.
    counts = np.zeros(hi - lo + 1, dtype=np.int64)
    chunk = 1 << 22
    for start in range(0, flat.size, chunk):
        counts += np.bincount(
            flat[start : start + chunk].astype(np.int64) - lo, minlength=counts.size
        )
    return int(np.count_nonzero(counts)) <= limit


def guess_is_label(path: str | Path | None, array: np.ndarray) -> bool:
    """Decide whether a volume is a label map (opens as a napari Labels layer).

    The rule, in order:

    1. ``array`` must hold whole numbers (integer dtype, or floats that are all
       integral) -- otherwise it is an image, whatever its name.
    2. A ``.seg.nrrd`` file, or a file name with a word ``label(s)``,
       ``labelmap``, ``seg(s)``, ``segmentation(s)`` or ``mask(s)``
       (case-insensitive; words are split on anything that is not a letter, so
       ``brain_mask.nii.gz``, ``Seg1.nrrd`` and ``case-labels.mha`` match but
       ``masked_t1.nii.gz`` and ``segment.nii`` do not) is a label map.
    3. Otherwise an **integer-dtype** volume whose values are all ``>= 0`` and
       take at most :data:`MAX_LABEL_VALUES` (64) distinct values is a label map.

    Pass ``is_label`` to :func:`load_volume` to override the guess.
    """
    array = np.asarray(array)
    if array.dtype.kind == "b":
        return True
    if array.dtype.kind == "f":
        sample = _sample(array.ravel())
        if not np.array_equal(sample, np.round(sample)):
            return False  # cheap exit for ordinary float images
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            return False
    elif array.dtype.kind not in "iu":
        return False
    if path is not None:
        if Path(path).name.lower().endswith(".seg.nrrd"):
            return True
        if LABEL_WORDS.intersection(_name_words(path)):
            return True
    return bool(
        array.dtype.kind in "iu"
        and array.min() >= 0
        and _few_distinct_values(array, MAX_LABEL_VALUES)
    )
