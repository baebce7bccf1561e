"""Write :class:`~napari_medgan.io.volume.Volume` objects to disk, atomically.

NIfTI goes through nibabel (RAS affine from :meth:`Volume.affine_ras`), NRRD
and MetaImage through SimpleITK (ITK ``(x, y, z)`` LPS geometry as stored in
the Volume). Every file is written to a temporary name beside the target and
renamed into place (:mod:`napari_medgan.io.atomic`).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from napari_medgan.io.atomic import atomic_path
from napari_medgan.io.paths import LABEL_META_KEY, volume_suffix
from napari_medgan.io.segments import segments_for, segments_to_header
from napari_medgan.io.volume import Volume, VolumeError

#: Suffixes :func:`save_volume` can write (header+data pairs are not atomic, so no .nhdr/.mhd).
WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")

# NIfTI xform code used when the volume did not come from a NIfTI file: 1 = scanner anatomical.
_DEFAULT_XFORM_CODE = 1


def _output_array(volume: Volume) -> np.ndarray:
    """Array in the dtype written to disk.

    Labels keep an integer type (int64 is narrowed to int32 when the values
    fit, for tools without 64-bit support); integer images keep their type so
    HU/raw values stay exact; float images become float32.
    """
    array = np.asarray(volume.array)
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind in "iu":
        if array.dtype.itemsize == 8:
            info = np.iinfo(np.int32)
            if array.size and info.min <= array.min() and array.max() <= info.max:
                return array.astype(np.int32)
        return array
    if volume.is_label:
        raise VolumeError(
            f"{volume.source or 'volume'}: label map has non-integer dtype {array.dtype}"
        )
    return array.astype(np.float32)


def _xform_codes(meta: dict) -> tuple[int, int]:
    """(qform_code, sform_code) from a NIfTI-read volume's meta, else scanner (1)."""
    if meta.get("format") != "nifti":
        return _DEFAULT_XFORM_CODE, _DEFAULT_XFORM_CODE
    qcode = int(meta.get("qform_code", _DEFAULT_XFORM_CODE))
    scode = int(meta.get("sform_code", _DEFAULT_XFORM_CODE))
    if qcode <= 0 and scode <= 0:
        # Both 0 means "ignore the affine" to every reader; we do have one.
        qcode = scode = _DEFAULT_XFORM_CODE
    return qcode, scode


def _write_nifti(volume: Volume, tmp: Path) -> None:
    import nibabel as nib

    data = _output_array(volume).transpose(2, 1, 0)  # our (z, y, x) -> NIfTI (i, j, k)
    affine = volume.affine_ras()
    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    hdr.set_data_dtype(data.dtype)
    qcode, scode = _xform_codes(volume.meta)
    # Both forms hold the same affine so nibabel (sform first) and ITK (qform
    # first) agree; a code of 0 is kept only when the other form is set.
    img.set_sform(affine, code=scode)
    img.set_qform(affine, code=qcode)
    hdr.set_xyzt_units("mm")
    if volume.is_label:
        hdr.set_intent("label")
    nib.save(img, str(tmp))


def volume_to_sitk(volume: Volume, array: np.ndarray | None = None) -> Any:
    """SimpleITK image of ``volume`` (or of ``array`` with its geometry)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array if array is None else array))
    image.SetSpacing([float(v) for v in volume.spacing])
    image.SetOrigin([float(v) for v in volume.origin])
    # ITK wants the 3x3 row-major; columns are the axis directions, as in Volume.
    image.SetDirection([float(v) for v in np.asarray(volume.direction).ravel()])
    return image


def _write_sitk(volume: Volume, tmp: Path) -> None:
    import SimpleITK as sitk

    array = _output_array(volume)
    image = volume_to_sitk(volume, array)
    if volume.is_label:
        image.SetMetaData(LABEL_META_KEY, "1")
    if volume.is_label and (tmp.name.lower().endswith(".seg.nrrd") or volume.meta.get("segments")):
        segments = segments_for(array, volume.meta.get("segments"))
        for key, value in segments_to_header(segments, volume.shape).items():
            image.SetMetaData(key, value)  # 3D Slicer's segment names, colours, values
    sitk.WriteImage(image, str(tmp), useCompression=True)


def _refuse_non_finite(volume: Volume, path: Path) -> None:
    """No writer puts NaN or infinity on disk: another tool would read it as a real scan."""
    array = np.asarray(volume.array)
    if array.dtype.kind == "f":
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise VolumeError(f"{path}: not written: {bad} of {array.size} voxels of "
                              f"{volume.source or 'the volume'} are NaN or infinite")


def save_volume(volume: Volume, path: str | Path) -> Path:
    """Write ``volume`` to ``path``; the format comes from the suffix.

    Parameters
    ----------
    volume : Volume
        Array ``(z, y, x)`` with ITK ``(x, y, z)`` LPS geometry.
    path : str or Path
        ``.nii``, ``.nii.gz`` (nibabel; sform and qform both set, codes from
        ``volume.meta`` when it came from NIfTI, else 1; labels get the NIfTI
        ``label`` intent), ``.nrrd`` or ``.mha`` (SimpleITK, compressed).

    Returns
    -------
    Path
        The written path. The write is atomic: on failure the previous file
        (if any) is untouched and no temporary file remains.

    Raises
    ------
    VolumeError
        Unsupported suffix, a label map with non-integer values, or NaN/infinite voxels.
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix not in WRITE_SUFFIXES:
        raise VolumeError(
            f"{path}: cannot write this file type; use one of {', '.join(WRITE_SUFFIXES)}"
        )
    _refuse_non_finite(volume, path)
    write = _write_nifti if suffix in (".nii", ".nii.gz") else _write_sitk
    with atomic_path(path) as tmp:
        write(volume, tmp)
    return path


# ----------------------------------------------------------------------------- DICOM
_SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _ds(value: float) -> str:
    # DICOM decimal strings hold at most 16 characters.
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.8g}"


def _new_uid() -> str:
    # UUID-derived UID (DICOM PS3.5 B.2): unique without a registered root, 44 characters.
    return f"2.25.{uuid.uuid4().int}"


def _dicom_pixels(array: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    """Pixels and rescale tags: whole numbers exact, other floats as int16 * slope + intercept."""
    lo, hi = float(array.min()), float(array.max())
    integral = array.dtype.kind in "biu" or np.array_equal(array, np.round(array))
    if integral and -32768 <= lo and hi <= 32767:
        return array.astype(np.int16), {"0028|1052": "0", "0028|1053": "1"}
    if integral and 0 <= lo and hi <= 65535:
        return array.astype(np.uint16), {"0028|1052": "0", "0028|1053": "1"}
    # GDCM only rescales float input (integer input needs an integer slope), so
    # hand it float64 plus the tags and let it quantise to signed 16 bits.
    slope = float(_ds((hi - lo) / 65000.0)) or 1.0
    intercept = float(_ds((hi + lo) / 2.0))
    tags = {
        "0028|1052": _ds(intercept),
        "0028|1053": _ds(slope),
        "0028|0100": "16",
        "0028|0101": "16",
        "0028|0102": "15",
        "0028|0103": "1",
    }
    return array.astype(np.float64), tags


def save_dicom_series(
    volume: Volume, folder: str | Path, modality: str | None = None
) -> list[Path]:
    """Write ``volume`` as a DICOM series, one file per z slice (for tests and exports).

    Whole-number data are stored exactly (int16/uint16); other floats as int16
    with RescaleSlope/RescaleIntercept, so reading back is exact to within
    one ``slope = (max - min) / 65000``. ImagePositionPatient (per slice),
    ImageOrientationPatient, PixelSpacing, SliceThickness and one
    SeriesInstanceUID are written so the geometry reads back unchanged --
    for a right-handed direction (det > 0). DICOM stacks slices along
    row x column, so a left-handed volume reads back with its k axis reversed
    (``array[::-1]``, origin at the last slice): same voxels at the same places.

    Parameters
    ----------
    volume : Volume
        The volume; its ``meta["modality"]`` is used when ``modality`` is None.
    folder : str or Path
        Created if needed; files are ``slice_0000.dcm``...
    modality : str or None
        DICOM modality (``"CT"``, ``"MR"``, ``"OT"``).

    Returns
    -------
    list of Path
        The written files, in slice order.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    _refuse_non_finite(volume, folder)
    folder.mkdir(parents=True, exist_ok=True)
    modality = (modality or volume.meta.get("modality") or "OT").upper()
    pixels, rescale = _dicom_pixels(np.asarray(volume.array))
    image = volume_to_sitk(volume, pixels)
    d = np.asarray(volume.direction)
    series_uid, study_uid, frame_uid = _new_uid(), _new_uid(), _new_uid()
    now_date, now_time = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    common = {
        "0008|0060": modality,
        "0008|0016": _SOP_CLASS.get(modality, _SECONDARY_CAPTURE),
        "0008|0020": now_date,
        "0008|0021": now_date,
        "0008|0030": now_time,
        "0008|0031": now_time,
        "0008|103e": volume.source and Path(volume.source).name or "napari-medgan export",
        "0010|0010": "ANONYMOUS",
        "0010|0020": "0",
        "0020|000d": study_uid,
        "0020|000e": series_uid,
        "0020|0052": frame_uid,
        # first two axis directions (columns of the LPS direction matrix)
        "0020|0037": "\\".join(_ds(v) for v in (*d[:, 0], *d[:, 1])),
        "0018|0050": _ds(float(volume.spacing[2])),
        "0028|0030": f"{_ds(float(volume.spacing[1]))}\\{_ds(float(volume.spacing[0]))}",
        **rescale,
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # use our UIDs, so every slice shares the series UID
    written = []
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        tags = dict(common)
        tags["0020|0032"] = "\\".join(
            _ds(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))
        )
        tags["0020|0013"] = str(k + 1)
        tags["0008|0018"] = f"{series_uid}.{k + 1}"
        for key, value in tags.items():
            slice_image.SetMetaData(key, value)
        target = folder / f"slice_{k:04d}.dcm"
        with atomic_path(target) as tmp:
            writer.SetFileName(str(tmp))
            writer.Execute(slice_image)
        written.append(target)
    return written


def safe_file_stem(name: str) -> str:
    """``name`` as a file stem that every system and shell accepts: letters, digits, ``.``,
    ``_`` and ``-`` kept, every other run of characters one ``_`` (``"synthetic_000 (step
    600)"`` -> ``"synthetic_000_step_600"``); never empty or hidden."""
    import re

    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._-")
    return stem or "volume"


def save_volumes(named: list[tuple[str, Volume]], folder: str | Path,
                 suffix: str = ".nii.gz") -> list[Path]:
    """Write each ``(name, volume)`` to ``folder/<safe name><suffix>`` with its geometry
    (:func:`save_volume`); a name already taken, in this call or on disk, gets ``_2``,
    ``_3``, ... -- nothing is overwritten. Returns the paths in order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, volume in named:
        stem = safe_file_stem(name)
        path, k = folder / f"{stem}{suffix}", 1
        while path.exists() or path in written:
            k += 1
            path = folder / f"{stem}_{k}{suffix}"
        written.append(save_volume(volume, path))
    return written
