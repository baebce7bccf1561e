"""Checks made from a file's header before any voxel is read.

A header can claim anything: 20000^3 voxels, data at byte 0, a data file in
``/etc``, compressed bytes that are not compressed, DICOM slices that leave a
gap. Each check here reads only headers and raises a one-line
:class:`~napari_medgan.io.volume.VolumeError` naming the file, so a hostile or
damaged file is refused before memory is allocated or a slice is misplaced.

Two limits can be raised by the user who trusts a file:

* ``NAPARI_MEDGAN_MAX_VOLUME_GB`` (CLI ``--max-volume-gb``): the largest volume
  read into memory, in GiB (default 2);
* ``NAPARI_MEDGAN_ALLOW_EXTERNAL_DATA=1`` (CLI ``--allow-external-data``): let a
  detached NRRD/MetaImage header name data files outside its own folder.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from pathlib import Path

import numpy as np

from napari_medgan.io.volume import VolumeError

MAX_VOLUME_ENV = "NAPARI_MEDGAN_MAX_VOLUME_GB"
EXTERNAL_DATA_ENV = "NAPARI_MEDGAN_ALLOW_EXTERNAL_DATA"
DEFAULT_MAX_VOLUME_GB = 2.0
_GIB = 1024**3


# ----------------------------------------------------------------------------- size
def max_volume_bytes() -> int:
    """The largest volume (bytes in memory) a reader accepts: ``NAPARI_MEDGAN_MAX_VOLUME_GB``
    GiB, default 2; a bad value in the variable is refused naming it."""
    text = os.environ.get(MAX_VOLUME_ENV, "").strip()
    if not text:
        return int(DEFAULT_MAX_VOLUME_GB * _GIB)
    try:
        gb = float(text)
    except ValueError:
        gb = float("nan")
    if not (math.isfinite(gb) and gb > 0):
        raise VolumeError(f"{MAX_VOLUME_ENV}: expected a positive number of GiB, got {text!r}")
    return int(gb * _GIB)


def _bytes_text(n: float) -> str:
    for unit, size in (("TiB", 1024**4), ("GiB", _GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def check_size(path: Path, shape: tuple[int, ...], itemsize: int) -> None:
    """Refuse a claimed voxel grid with a non-positive axis or larger than the limit."""
    dims = tuple(int(s) for s in shape)
    if any(s <= 0 for s in dims):
        raise VolumeError(f"{path}: header claims an empty or negative size {dims}")
    nbytes = math.prod(dims) * int(itemsize)
    limit = max_volume_bytes()
    if nbytes > limit:
        raise VolumeError(
            f"{path}: header claims {'x'.join(map(str, dims))} voxels ({_bytes_text(nbytes)} "
            f"in memory), over the {_bytes_text(limit)} limit; if the file is genuine, raise it "
            f"with --max-volume-gb or {MAX_VOLUME_ENV}")


def sitk_itemsize(pixel_type: str) -> int:
    """Bytes per component from SimpleITK's pixel type text (``"16-bit signed integer"``)."""
    found = re.search(r"(\d+)-bit", pixel_type)
    return int(found.group(1)) // 8 if found else 8


# ----------------------------------------------------------------------------- NIfTI
def check_nifti_header(path: Path, img) -> None:
    """Data offset inside the file's header, and voxel bytes present (uncompressed files)."""
    hdr = img.header
    magic = bytes(hdr["magic"]).rstrip(b"\x00")
    offset = int(img.dataobj.offset)
    if magic in (b"n+1", b"n+2") and offset < hdr.single_vox_offset:
        raise VolumeError(
            f"{path}: vox_offset {float(hdr['vox_offset']):g} points inside the header "
            f"(voxels start at byte {hdr.single_vox_offset} or later); the header is damaged")
    if path.suffix.lower() == ".nii":
        dtype = img.get_data_dtype()
        needed = offset + math.prod(int(s) for s in img.shape) * dtype.itemsize
        size = path.stat().st_size
        if size < needed:
            raise VolumeError(
                f"{path}: file is truncated: the header needs {needed} bytes, the file has {size}")


def nifti_zoom_warnings(path: Path, img) -> list[str]:
    """What nibabel silently substituted for zero or negative pixdim, when the affine used
    comes from the qform (with an sform the pixdim values do not place the voxels)."""
    import nibabel as nib

    hdr = img.header
    if int(hdr["sform_code"]) > 0:
        return []
    with nib.openers.ImageOpener(path) as fh:
        raw = type(hdr).from_fileobj(fh, check=False)
    notes = []
    for axis, value in zip("xyz", np.asarray(raw["pixdim"][1:4], dtype=np.float64)):
        if value == 0:
            notes.append(f"{path}: pixdim of axis {axis} is 0; reading it as 1 mm")
        elif value < 0:
            notes.append(f"{path}: pixdim of axis {axis} is {value:g}; reading it as {-value:g} mm")
    return notes


# ----------------------------------------------------------------------------- detached data
def external_data_allowed() -> bool:
    return os.environ.get(EXTERNAL_DATA_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _header_text(path: Path, limit: int = 1 << 16) -> str:
    with open(path, "rb") as fh:
        head = fh.read(limit)
    return head.decode("latin-1")


def _pattern_names(pattern: str, start: str, stop: str, step: str) -> list[str]:
    """File names of a ``name%03d.raw min max step`` data-file pattern (NRRD, MetaImage)."""
    try:
        lo, hi, by = int(start), int(stop), int(step)
        if by == 0 or abs(hi - lo) // abs(by) > 100_000:
            raise ValueError
        return [pattern % i for i in range(lo, hi + (1 if by > 0 else -1), by)]
    except (ValueError, TypeError):
        raise VolumeError(f"bad data file pattern {pattern!r} {start} {stop} {step}") from None


def _data_files(header: Path) -> list[str]:
    """Names of the data files a NRRD / MetaImage header refers to (empty: data inline)."""
    text = _header_text(header)
    if header.suffix.lower() in (".nrrd", ".nhdr"):
        fields, rest = _nrrd_fields(text)
        value = fields.get("data file", fields.get("datafile", ""))
    else:
        fields, end = _metaimage_fields(text)
        value, rest = fields.get("ElementDataFile", ""), text[end:].split("\n")
    words = value.split()
    if not words or words[0] == "LOCAL":
        return []
    if words[0] == "LIST":  # one name per line after the field
        return [ln.strip() for ln in rest if ln.strip()]
    if len(words) >= 4 and "%" in words[0]:
        return _pattern_names(*words[:4])
    return [value]


def check_data_files(path: Path) -> None:
    """A header's data files must resolve inside its own folder (unless the user allows
    others), so a file from the internet cannot make us read ``/etc/...`` as voxels."""
    try:
        names = _data_files(path)
    except VolumeError as exc:
        raise VolumeError(f"{path}: {exc}") from None
    if not names or external_data_allowed():
        return
    folder = path.parent.resolve()
    for name in names:
        target = (folder / name).resolve()
        if not target.is_relative_to(folder):
            raise VolumeError(
                f"{path}: header names data file {name!r} outside its folder; data files are "
                f"read only beside their header (allow others with --allow-external-data or "
                f"{EXTERNAL_DATA_ENV}=1)")


#: MetaImage voxel types ITK reads as numbers (``MET_STRING`` and friends are not voxels).
MET_TYPES = frozenset(f"MET_{t}" for t in (
    "CHAR", "UCHAR", "SHORT", "USHORT", "INT", "UINT", "LONG", "ULONG", "LONG_LONG",
    "ULONG_LONG", "FLOAT", "DOUBLE"))
#: NRRD ``type`` spellings of numbers (NRRD spec, section "type").
NRRD_TYPES = frozenset((
    "signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t", "short",
    "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
    "unsigned short", "unsigned short int", "uint16", "uint16_t", "int", "signed int", "int32",
    "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "longlong", "long long",
    "long long int", "signed long long", "signed long long int", "int64", "int64_t",
    "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "float",
    "double"))


def _whole(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _metaimage_fields(text: str) -> tuple[dict[str, str], int]:
    """A MetaImage header's ``key = value`` fields up to ``ElementDataFile``, and the byte
    where what follows it (voxels, or a LIST of files) starts."""
    fields: dict[str, str] = {}
    end = 0
    for line in text.split("\n"):
        end += len(line) + 1
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    return fields, end


def _nrrd_fields(text: str) -> tuple[dict[str, str], list[str]]:
    """A NRRD header's ``key: value`` fields (keys lower case) up to the blank line that
    ends an attached header, and the lines after its ``data file`` field (a LIST's names)."""
    fields: dict[str, str] = {}
    rest: list[str] = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if i and not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and not value.startswith("="):
            fields[key.strip().lower()] = value.strip()
            if key.strip().lower() in ("data file", "datafile"):
                rest = lines[i + 1:]
    return fields, rest


def check_metaimage_header(path: Path) -> None:
    """The fields ITK trusts blindly: ``NDims`` (a huge value crashes it), ``DimSize``,
    ``ElementType`` and ``CompressedDataSize``; and ``CompressedData = True`` must be followed
    by a zlib/gzip stream (ITK would otherwise return the raw bytes as if they inflated)."""
    fields, end = _metaimage_fields(_header_text(path))
    if "NDims" not in fields and "ObjectType" not in fields:
        raise VolumeError(f"{path}: cannot read as MetaImage (no NDims or ObjectType field: "
                          "damaged, or another format)")
    ndims = _whole(fields.get("NDims", ""))
    if ndims is None or not 1 <= ndims <= 8:
        raise VolumeError(f"{path}: NDims = {fields.get('NDims')!r} is not a number of "
                          "dimensions from 1 to 8; the header is damaged")
    dims = [_whole(v) for v in fields.get("DimSize", "").split()]
    if len(dims) != ndims or any(d is None or d < 1 for d in dims):
        raise VolumeError(f"{path}: DimSize = {fields.get('DimSize')!r} does not give {ndims} "
                          "positive sizes; the header is damaged")
    kind = fields.get("ElementType", "")
    if kind not in MET_TYPES:
        raise VolumeError(f"{path}: ElementType = {kind!r} is not a numeric voxel type "
                          f"({', '.join(sorted(MET_TYPES))})")
    if fields.get("CompressedData", "False").lower() != "true":
        return
    data_file = fields.get("ElementDataFile", "LOCAL")
    source, start = (path, end) if data_file == "LOCAL" else (path.parent / data_file, 0)
    if not source.is_file():
        return  # a list or pattern of files: ITK reports what it cannot open
    available = source.stat().st_size - start
    declared = fields.get("CompressedDataSize")
    if declared is not None and _whole(declared) != available:
        raise VolumeError(f"{path}: CompressedDataSize = {declared} but {available} bytes of "
                          "compressed data follow: the file is truncated or damaged")
    with open(source, "rb") as fh:
        fh.seek(start)
        chunk = fh.read(1 << 16)
    try:
        zlib.decompressobj(47).decompress(chunk, 1 << 16)  # 47: zlib or gzip header
    except zlib.error:
        raise VolumeError(f"{path}: CompressedData = True but the data is not a zlib stream "
                          "(damaged file, or the header lies about compression)") from None


def check_nrrd_header(path: Path) -> None:
    """The NRRD fields SimpleITK does not check: ``type`` (a number), ``dimension`` and
    ``sizes``, and ``byte skip`` (-1, meaning "the data end the file", or >= 0)."""
    text = _header_text(path)
    if not text.startswith("NRRD000"):
        raise VolumeError(f"{path}: cannot read as NRRD (no NRRD000x magic at the start: "
                          "damaged, or another format)")
    fields, _ = _nrrd_fields(text)
    kind = fields.get("type", "").lower()
    if kind not in NRRD_TYPES:
        raise VolumeError(f"{path}: type {kind!r} is not a numeric voxel type")
    dimension = _whole(fields.get("dimension", ""))
    sizes = [_whole(v) for v in fields.get("sizes", "").split()]
    if dimension is None or not 1 <= dimension <= 8 or len(sizes) != dimension \
            or any(s is None or s < 1 for s in sizes):
        raise VolumeError(f"{path}: dimension {fields.get('dimension')!r} and sizes "
                          f"{fields.get('sizes')!r} do not agree; the header is damaged")
    for key in ("byte skip", "byteskip", "line skip", "lineskip"):
        if key in fields:
            skip = _whole(fields[key])
            lowest = -1 if key.startswith("byte") else 0
            if skip is None or skip < lowest or (skip == -1 and
                                                  fields.get("encoding", "raw") != "raw"):
                raise VolumeError(f"{path}: {key} {fields[key]!r} is not valid here "
                                  "(-1 for raw data at the end of the file, else >= 0)")


# ----------------------------------------------------------------------------- DICOM
def check_slice_positions(folder: Path, files: list[str]) -> None:
    """Refuse a series whose slices are not equally spaced along the slice normal: a deleted
    or unreadable slice leaves a gap, and several slices at one position leave none.
    ITK would stack them anyway, with one averaged spacing, misplacing every slice after
    the fault."""
    import SimpleITK as sitk

    if len(files) < 2:
        return
    positions, first = [], None
    reader = sitk.ImageFileReader()
    for name in files:
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise VolumeError(f"{folder}: {Path(name).name} cannot be read (damaged or "
                              "truncated slice)") from None
        tags = [reader.GetMetaData(t).strip() if reader.HasMetaDataKey(t) else None
                for t in ("0020|0032", "0020|0037")]
        if first is None and None in tags:
            return  # no position tags (secondary capture...): nothing to verify, ITK decides
        pos, cos = (_numbers(t) for t in tags)
        if pos is None or len(pos) != 3 or cos is None or len(cos) != 6 \
                or np.linalg.norm(np.cross(cos[:3], cos[3:])) < 0.5:
            raise VolumeError(f"{folder}: {Path(name).name} has no valid ImagePositionPatient "
                              f"/ ImageOrientationPatient ({tags[0]} / {tags[1]}); its slice "
                              "cannot be placed")
        if first is None:
            first = cos
        elif np.abs(cos - first).max() > 1e-3:
            raise VolumeError(f"{folder}: {Path(name).name} is oriented {tags[1]}, unlike the "
                              "other slices; a series has one orientation (mixed series?)")
        positions.append(float(pos @ np.cross(first[:3], first[3:])))
    if len(positions) < 3:
        return
    order = np.sort(np.asarray(positions))
    steps = np.diff(order)
    spacing = float(np.median(steps))
    tol = max(1e-3, 0.01 * spacing)
    same = np.flatnonzero(steps < tol)
    if len(same):
        where = order[same[0]]
        count = int(np.sum(np.abs(order - where) < tol))
        raise VolumeError(
            f"{folder}: {count} slices share the position {where:.3f} mm along the slice "
            "normal; a series has one slice per position (mixed series or duplicated files)")
    gaps = np.flatnonzero(np.abs(steps - spacing) > tol)
    if len(gaps):
        i = gaps[0]
        missing = round(steps[i] / spacing) - 1
        what = (f"{missing} slice(s) missing after {order[i]:.3f} mm (spacing {spacing:.3f} mm, "
                f"next slice at {order[i + 1]:.3f} mm)" if missing >= 1 and
                abs(steps[i] - (missing + 1) * spacing) <= tol else
                f"slices are unevenly spaced ({steps[i]:.3f} mm after {order[i]:.3f} mm, "
                f"elsewhere {spacing:.3f} mm)")
        raise VolumeError(f"{folder}: {what}; every slice after it would be misplaced"
                          f"{_left_out(folder, files)} -- restore the missing file(s) or "
                          "export the series again")


def _numbers(text: str | None) -> np.ndarray | None:
    """Finite numbers of a DICOM multi-value string (``"1\\0\\0"``), or None."""
    try:
        values = np.array([float(v) for v in (text or "").split("\\")], dtype=np.float64)
    except ValueError:
        return None
    return values if values.size and np.all(np.isfinite(values)) else None


def _left_out(folder: Path, files: list[str]) -> str:
    """``"; not part of the series: a.dcm, b.dcm"`` for DICOM-looking files GDCM skipped
    (unreadable or truncated ones are the usual cause of a gap)."""
    from napari_medgan.io.paths import _looks_like_dicom_file

    used = {Path(f).resolve() for f in files}
    others = sorted(p.name for p in folder.iterdir()
                    if p.is_file() and p.resolve() not in used and _looks_like_dicom_file(p))
    if not others:
        return ""
    more = f" and {len(others) - 3} more" if len(others) > 3 else ""
    return f"; not readable as part of the series: {', '.join(others[:3])}{more}"
