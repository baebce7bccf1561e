"""Hostile DICOM series folders, derived from a valid series written by the package's own
``save_dicom_series`` (14 int16 CT slices, one SeriesInstanceUID, per-slice
ImagePositionPatient): a slice missing, truncated or moved, slices stacked on one
position, a slice of another size, orientation or series, non-DICOM files.

A series with a gap or duplicated positions must be refused: reading it anyway puts
every slice after the fault at the wrong place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from fuzz_cases import SPACING, Input, write

GROUP = "dicom"
MIDDLE = 6  # a slice in the middle of the 14


def _copy_series(folder: Path, bases) -> tuple[Path, list[Path]]:
    target = folder / "series"
    shutil.copytree(bases.dicom_series(), target)
    return target, sorted(target.glob("slice_*.dcm"))


def _rewrite(path: Path, tags: dict | None = None, origin=None, size=None) -> None:
    """Rewrite one slice file with changed tags, origin (kept equal to the position tag, which
    GDCM may regenerate from it) or pixel size (a new image carrying the same tags)."""
    import SimpleITK as sitk

    src = sitk.ReadImage(str(path))
    img = src
    if size is not None:
        img = sitk.GetImageFromArray(np.zeros((1, size[1], size[0]), np.int16))
        img.SetSpacing(src.GetSpacing())
        img.SetOrigin(src.GetOrigin())
        img.SetDirection(src.GetDirection())
        for key in src.GetMetaDataKeys():
            img.SetMetaData(key, src.GetMetaData(key))
    if origin is not None:
        img.SetOrigin([float(v) for v in origin])
    for key, value in (tags or {}).items():
        img.SetMetaData(key, value)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(path))
    writer.Execute(img)


def _position(path: Path) -> list[float]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]


def _set_position(path: Path, pos) -> None:
    _rewrite(path, {"0020|0032": "\\".join(f"{v:g}" for v in pos)}, origin=pos)


def _case(slug, fault, mutate, expect="refuse", entry_file: int | None = None):
    """``mutate(series_folder, slice_files)``; ``entry_file`` hands that slice's file to the
    entry points instead of the folder."""
    def build(folder, bases):
        series, files = _copy_series(folder, bases)
        mutate(series, files)
        return files[entry_file] if entry_file is not None else series

    return Input(f"{GROUP}/{slug}", GROUP, fault, build, expect,
                 reference="int16" if expect == "same" else None)


def _delete(series, files, k=MIDDLE):
    files[k].unlink()


def _truncate(series, files, keep=None):
    data = files[MIDDLE].read_bytes()
    files[MIDDLE].write_bytes(data[: keep if keep is not None else len(data) // 2])


def _same_position(series, files, count=4):
    pos = _position(files[MIDDLE])
    for f in files[MIDDLE + 1: MIDDLE + count]:
        _set_position(f, pos)


def _all_same_position(series, files):
    pos = _position(files[0])
    for f in files[1:]:
        _set_position(f, pos)


def _shift_half(series, files):
    pos = _position(files[MIDDLE])
    pos[2] += SPACING[2] / 2
    _set_position(files[MIDDLE], pos)


def _other_size(series, files):
    _rewrite(files[MIDDLE], size=(20, 20))


def _other_orientation(series, files):
    _rewrite(files[MIDDLE], {"0020|0037": "0\\1\\0\\1\\0\\0"})


def _other_series(series, files):
    _rewrite(files[MIDDLE], {"0020|000e": "2.25.1234567890", "0008|0018": "2.25.1234567891"})


def _nan_position(series, files):
    _rewrite(files[MIDDLE], {"0020|0032": "nan\\nan\\nan"})


def _zero_pixel_spacing(series, files):
    for f in files:
        _rewrite(f, {"0028|0030": "0\\0"})


def _garbage_dcm(series, files):
    write(series / "zz_garbage.dcm", np.random.default_rng(3).integers(
        0, 256, 4096, dtype=np.uint8).tobytes())


def _readme(series, files):
    write(series / "README.txt", "exported by a scanner\n")


def inputs() -> list[Input]:
    cases = [
        _case("valid-series", "control", lambda s, f: None, "same"),
        _case("valid-series-plus-garbage-dcm", "control", _garbage_dcm, "same"),
        _case("valid-series-plus-readme", "control", _readme, "same"),
        _case("slice-deleted-middle", "series gap", _delete),
        _case("slice-deleted-middle-open-one-file", "series gap", _delete, entry_file=2),
        _case("slice-truncated-half", "truncated slice", _truncate),
        _case("slice-truncated-header", "truncated slice", lambda s, f: _truncate(s, f, 200)),
        _case("slice-emptied", "truncated slice", lambda s, f: _truncate(s, f, 0)),
        _case("four-slices-one-position", "duplicate slice positions", _same_position),
        _case("all-slices-one-position", "duplicate slice positions", _all_same_position),
        _case("slice-shifted-half-spacing", "irregular slice spacing", _shift_half),
        _case("slice-other-size", "inconsistent slice", _other_size),
        _case("slice-other-orientation", "inconsistent slice", _other_orientation),
        _case("slice-other-series-uid", "series gap", _other_series),
        _case("slice-nan-position", "inconsistent slice", _nan_position),
        _case("pixel-spacing-zero", "bad spacing/direction", _zero_pixel_spacing, "any"),
    ]

    def non_dicom(folder, bases):
        series = folder / "series"
        write(series / "notes.txt", "not an image\n")
        write(series / "image.png", b"\x89PNG\r\n\x1a\n" + bytes(100))
        write(series / "data.bin", bytes(range(256)) * 4)
        return series

    def garbage_alone(folder, bases, open_file=False):
        series = folder / "series"
        path = write(series / "slice_0000.dcm", np.random.default_rng(4).integers(
            0, 256, 4096, dtype=np.uint8).tobytes())
        return path if open_file else series

    def empty_dcm(folder, bases):
        return write(folder / "series" / "empty.dcm", b"")

    def empty_folder(folder, bases):
        (folder / "series").mkdir()
        return folder / "series"

    def fake_magic(folder, bases):
        series = folder / "series"
        write(series / "IM0001", bytes(128) + b"DICM" + b"\x02\x00" * 200)
        return series

    cases += [
        Input(f"{GROUP}/folder-of-non-dicom-files", GROUP, "not DICOM", non_dicom, "refuse"),
        Input(f"{GROUP}/garbage-dcm-alone", GROUP, "not DICOM", garbage_alone, "refuse"),
        Input(f"{GROUP}/garbage-dcm-file", GROUP, "not DICOM",
              lambda f, b: garbage_alone(f, b, True), "refuse"),
        Input(f"{GROUP}/empty-dcm-file", GROUP, "empty file", empty_dcm, "refuse"),
        Input(f"{GROUP}/empty-folder", GROUP, "not DICOM", empty_folder, "refuse"),
        Input(f"{GROUP}/dicm-magic-then-garbage", GROUP, "not DICOM", fake_magic, "refuse"),
    ]
    return cases
