"""Read 3D medical volumes into :class:`~napari_medgan.io.volume.Volume`.

NIfTI is read with nibabel (its ``img.affine`` already applies the
sform/qform precedence of the standard); NRRD, MetaImage and DICOM series are
read with SimpleITK, whose geometry is already ITK ``(x, y, z)`` LPS. Every
failure is a :class:`VolumeError` whose single line starts with the path.

4D decision: a series with a 4th axis longer than 1 (fMRI, DWI, multi-echo,
Slicer multi-layer ``.seg.nrrd``) is rejected with the file's shape and a hint
to extract one volume; a 4th axis of size 1 is squeezed away.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from napari_medgan.io import guards
from napari_medgan.io.paths import (
    LABEL_META_KEY,
    VOLUME_SUFFIXES,
    _FORMAT_NAMES,
    guess_is_label,
    is_dicom_folder,
    volume_suffix,
)
from napari_medgan.io.segments import segments_from_header
from napari_medgan.io.volume import Volume, VolumeError

def _as_label_array(array: np.ndarray, path: Path) -> np.ndarray:
    """Integer copy of ``array`` for a Labels layer; error when values are not whole numbers."""
    if array.dtype.kind in "iu":
        return array
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if not np.array_equal(array, np.round(array)):
        raise VolumeError(f"{path}: asked for a label map but the voxels are not whole numbers")
    lo, hi = float(array.min()), float(array.max())
    for dtype in (np.uint8, np.int16, np.uint16, np.int32, np.int64):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return array.astype(dtype)
    raise VolumeError(f"{path}: label values [{lo:g}, {hi:g}] do not fit an integer type")


# ----------------------------------------------------------------------------- helpers
def _short(exc: BaseException) -> str:
    """One line from a library exception (SimpleITK's are multi-line with C++ paths)."""
    text = str(exc) or type(exc).__name__
    for marker in ("sitk::ERROR:", "ITK ERROR:"):
        if marker in text:
            text = text.split(marker, 1)[1]
    text = re.sub(r"\w+\(0x[0-9a-fA-F]+\):", "", text)  # "NrrdImageIO(0x55..):" object addresses
    text = " ".join(text.split())
    return text[:200]


@contextmanager
def _library_errors(path: Path, what: str) -> Iterator[None]:
    """Turn whatever a library raises on a bad file into one VolumeError line."""
    try:
        yield
    except (VolumeError, MemoryError):
        raise
    except Exception as exc:  # nibabel/gzip/zlib/SimpleITK raise many unrelated types
        raise VolumeError(
            f"{path}: cannot read as {what} (damaged, truncated or another format): {_short(exc)}"
        ) from exc


def _squeeze_to_3d(
    array: np.ndarray, file_shape: tuple[int, ...], path: Path, reversed_axes: bool
) -> np.ndarray:
    """Drop singleton axes after the 3rd; reject 2D and true 4D+ data.

    ``file_shape`` is in file order ``(x, y, z, t...)``; ``array`` is in that
    order too (nibabel) or reversed (``reversed_axes``, SimpleITK).
    """
    file_shape = tuple(int(s) for s in file_shape)
    dims = list(file_shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) < 3:
        raise VolumeError(f"{path}: 2D image of shape {file_shape} (x, y); expected a 3D volume")
    if len(dims) > 3:
        raise VolumeError(
            f"{path}: {len(file_shape)}D series of shape {file_shape} (x, y, z, t...); "
            "napari-medgan reads one 3D volume per file -- extract a volume first "
            "(e.g. nibabel.funcs.four_to_three or SimpleITK image[:, :, :, t])"
        )
    if array.ndim == 3:
        return array
    return array.reshape(array.shape[-3:] if reversed_axes else array.shape[:3])


def _check_values(array: np.ndarray, path: Path) -> np.ndarray:
    if 0 in array.shape:
        raise VolumeError(f"{path}: volume is empty, shape {tuple(array.shape)} (z, y, x)")
    if array.dtype.kind not in "biuf":
        raise VolumeError(f"{path}: voxel type {array.dtype} is not a scalar number")
    if array.dtype.kind == "f":
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            which = "all" if bad == array.size else f"{bad} of {array.size}"
            raise VolumeError(f"{path}: {which} voxels are NaN or infinite")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))  # torch refuses big-endian data
    return array


def _finish(array: np.ndarray, path: Path, is_label: bool | None, build) -> Volume:
    """Validate voxels, decide label-ness, then let ``build(array, is_label)`` add geometry."""
    array = _check_values(array, path)
    if is_label is None:
        is_label = guess_is_label(path, array)
    if is_label:
        array = _as_label_array(array, path)
    return build(np.ascontiguousarray(array), bool(is_label))


# ----------------------------------------------------------------------------- NIfTI
#: Bytes a ``.nii.gz`` stream may hold past the voxels its header describes.
TRAILING_LIMIT = 1 << 24


def _gzip_voxels(path: Path, offset: int, dtype: np.dtype, shape: tuple) -> np.ndarray:
    """The voxels of a ``.nii.gz``, read in one pass to the end of the gzip stream, so its
    CRC is checked (nibabel stops at the last voxel and never sees a damaged body). Memory
    is committed only as data actually inflate: a stream shorter than its header claims is
    refused after reading what it holds, a stream far longer is refused as well."""
    import gzip

    count = math.prod(int(s) for s in shape)
    needed = offset + count * dtype.itemsize
    buffer = np.empty(needed, np.uint8)  # pages are touched only when written
    view, filled = memoryview(buffer), 0
    with gzip.open(path, "rb") as stream:
        while filled < needed:
            got = stream.readinto(view[filled:filled + (1 << 24)])
            if not got:
                raise VolumeError(f"{path}: file is truncated: the header needs {needed} bytes, "
                                  f"the compressed stream holds {filled}")
            filled += got
        extra = 0
        while chunk := stream.read(1 << 20):  # to the end: gzip checks its CRC there
            extra += len(chunk)
            if extra > TRAILING_LIMIT:
                raise VolumeError(f"{path}: the stream goes on for more than "
                                  f"{TRAILING_LIMIT >> 20} MiB past the voxels its header "
                                  "describes; damaged or not a NIfTI file")
    return np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape,
                                                                                  order="F")


def _read_nifti(path: Path, is_label: bool | None) -> Volume:
    import nibabel as nib

    with _library_errors(path, "NIfTI"):
        img = nib.load(str(path))
        if not isinstance(img, nib.Nifti1Image):  # nibabel also opens Analyze/MGH by content
            raise VolumeError(f"{path}: not a NIfTI-1/2 file ({type(img).__name__})")
        hdr = img.header
        raw_dtype = img.get_data_dtype()
        slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
        scaled = not (slope == 1.0 and inter == 0.0)
        loaded = 4 if raw_dtype.itemsize <= 2 else 8  # scaled voxels become float32/64
        guards.check_size(path, img.shape, max(raw_dtype.itemsize, loaded if scaled else 0))
        guards.check_nifti_header(path, img)
        for note in guards.nifti_zoom_warnings(path, img):
            warnings.warn(note, stacklevel=4)
        # Unscaled integers stay integers (exact label values); otherwise
        # nibabel applies scl_slope/inter in float, as get_fdata would.
        if path.name.lower().endswith(".gz"):
            raw = _gzip_voxels(path, int(img.dataobj.offset), raw_dtype, img.shape)
            data = nib.volumeutils.apply_read_scaling(raw, img.dataobj.slope, img.dataobj.inter)
        else:
            data = np.asanyarray(img.dataobj)
        if scaled and raw_dtype.kind in "iu" and raw_dtype.itemsize <= 2:
            data = data.astype(np.float32)  # 8/16-bit * slope fits float32's 24-bit mantissa
        data = np.asarray(data)
        affine = img.affine
        intent = hdr.get_intent()[0]
        meta = {
            "format": "nifti",
            "qform_code": int(hdr["qform_code"]),
            "sform_code": int(hdr["sform_code"]),
            "dtype": str(raw_dtype.newbyteorder("=")),
            "scl_slope": slope,
            "scl_inter": inter,
            "intent": str(intent),
        }
    data = _squeeze_to_3d(data, img.shape, path, reversed_axes=False)
    if is_label is None and intent == "label":
        is_label = True  # NIFTI_INTENT_LABEL, set by our writer and by e.g. FSL/ANTs

    def build(array: np.ndarray, label: bool) -> Volume:
        # file (i, j, k) -> our (z, y, x)
        zyx = np.ascontiguousarray(array.transpose(2, 1, 0))
        return Volume.from_affine(zyx, affine, "RAS", is_label=label, source=str(path), meta=meta)

    return _finish(data, path, is_label, build)


# ----------------------------------------------------------------------------- SimpleITK
def volume_from_sitk(image: Any, path: Path | str, is_label: bool | None, meta: dict) -> Volume:
    """Build a Volume from a SimpleITK image (its geometry is already ITK x, y, z, LPS)."""
    path = Path(path)
    dim = image.GetDimension()
    size = tuple(image.GetSize())
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise VolumeError(
            f"{path}: {image.GetNumberOfComponentsPerPixel()} components per voxel "
            "(vector/RGB image); expected a scalar volume"
        )
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)  # (.., z, y, x)
    array = _squeeze_to_3d(array, size, path, reversed_axes=True)
    spacing = image.GetSpacing()[:3]
    origin = image.GetOrigin()[:3]
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    meta = dict(meta, dtype=str(array.dtype))
    keys = image.GetMetaDataKeys()
    if is_label is None and LABEL_META_KEY in keys:
        is_label = image.GetMetaData(LABEL_META_KEY).strip() == "1"
    segments = segments_from_header({k: image.GetMetaData(k) for k in keys
                                     if k.startswith("Segment")})
    if segments:  # a 3D Slicer segmentation: names and colours of its label values
        meta["segments"] = segments
        is_label = True if is_label is None else is_label

    def build(arr: np.ndarray, label: bool) -> Volume:
        return Volume(
            arr,
            spacing=spacing,
            origin=origin,
            direction=direction,
            is_label=label,
            source=str(path),
            meta=meta,
        )

    return _finish(array, path, is_label, build)


def _header_only(file: str | Path, path: Path, what: str):
    """``(reader, bytes per voxel)``: a SimpleITK reader of ``file`` that has read its header
    and no voxel yet (errors name ``path`` as a ``what`` that cannot be read)."""
    import SimpleITK as sitk

    with _library_errors(path, what):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(file))
        reader.ReadImageInformation()
        pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    return reader, guards.sitk_itemsize(pixel) * reader.GetNumberOfComponents()


def _read_sitk_file(path: Path, is_label: bool | None, fmt: str) -> Volume:
    what = fmt.upper() if fmt == "nrrd" else "MetaImage"
    guards.check_data_files(path)
    (guards.check_metaimage_header if fmt == "metaimage" else guards.check_nrrd_header)(path)
    reader, itemsize = _header_only(path, path, what)
    guards.check_size(path, reader.GetSize(), itemsize)
    with _library_errors(path, what):
        image = reader.Execute()
    return volume_from_sitk(image, path, is_label, {"format": fmt})


def dicom_series_files(path: str | Path) -> list[str]:
    """Files of the DICOM series :func:`load_volume` reads for ``path`` (folder or ``.dcm`` file).

    For a folder, the series with most files (a warning names the others);
    for a file, the series of its folder that contains it.
    """
    import SimpleITK as sitk

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    with _library_errors(path, "DICOM"):
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        series = {
            sid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid))
            for sid in ids
        }
    if not series:
        raise VolumeError(f"{path}: no DICOM series found")
    if not path.is_dir():
        target = path.resolve()
        for files in series.values():
            if any(Path(f).resolve() == target for f in files):
                return files
        raise VolumeError(f"{path}: not part of any readable DICOM series in {folder}")
    best = max(series, key=lambda sid: len(series[sid]))
    if len(series) > 1:
        others = ", ".join(f"{sid} ({len(f)} files)" for sid, f in series.items() if sid != best)
        warnings.warn(
            f"{path}: {len(series)} DICOM series found; "
            f"reading {best} ({len(series[best])} files), "
            f"ignoring {others}",
            stacklevel=3,
        )
    return series[best]


def _read_dicom(path: Path, is_label: bool | None) -> Volume:
    import SimpleITK as sitk

    files = dicom_series_files(path)
    folder = path if path.is_dir() else path.parent
    info, itemsize = _header_only(files[0], path, "DICOM")
    size = info.GetSize()
    guards.check_size(folder, (size[0], size[1], len(files) * (size[2] if len(size) > 2 else 1)),
                      itemsize)
    guards.check_slice_positions(folder, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    with _library_errors(path, "a DICOM series"):
        image = reader.Execute()
    meta: dict = {"format": "dicom", "files": len(files)}
    for key, tag in (
        ("modality", "0008|0060"),
        ("series_uid", "0020|000e"),
        ("series_description", "0008|103e"),
    ):
        if reader.HasMetaDataKey(0, tag):
            meta[key] = reader.GetMetaData(0, tag).strip()
    return volume_from_sitk(image, path, is_label, meta)


# ----------------------------------------------------------------------------- entry
def load_volume(path: str | Path, is_label: bool | None = None) -> Volume:
    """Read a 3D volume with its geometry.

    Parameters
    ----------
    path : str or Path
        ``.nii``/``.nii.gz`` (nibabel), ``.nrrd``/``.nhdr``/``.mha``/``.mhd``
        (SimpleITK), a folder holding a DICOM series, or one ``.dcm`` file
        (its folder's series that contains it is read).
    is_label : bool or None
        Force a label map (integer array) or an image; None guesses with
        :func:`guess_is_label` (a NIfTI ``label`` intent or our writers'
        NRRD/MetaImage marker also count).

    Returns
    -------
    Volume
        ``array`` in ``(z, y, x)``; geometry in ITK ``(x, y, z)`` LPS. Integer
        data without scaling keep their dtype; scaled NIfTI data become float.
        ``meta["format"]`` names the format.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    VolumeError
        Unreadable, truncated or mislabelled file, 2D image, 4D series (a 4th
        axis of size 1 is squeezed), empty volume, NaN/Inf voxels, or a
        singular affine; the one-line message starts with the path.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        if not is_dicom_folder(path):
            raise VolumeError(f"{path}: folder holds no DICOM series")
        return _read_dicom(path, is_label)
    suffix = volume_suffix(path)
    if suffix is None:
        raise VolumeError(
            f"{path}: unsupported file type; expected one of {', '.join(VOLUME_SUFFIXES)} "
            "or a DICOM folder"
        )
    if path.stat().st_size == 0:
        raise VolumeError(f"{path}: file is empty (0 bytes)")
    fmt = _FORMAT_NAMES[suffix]
    if fmt == "nifti":
        return _read_nifti(path, is_label)
    if fmt == "dicom":
        return _read_dicom(path, is_label)
    return _read_sitk_file(path, is_label, fmt)
