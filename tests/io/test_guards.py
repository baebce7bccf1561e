"""Hostile headers are refused from the header alone: before allocating, before a slice is
misplaced, before a file outside the header's folder is read."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_medgan.io import Volume, VolumeError, load_volume, save_volume
from napari_medgan.io.guards import EXTERNAL_DATA_ENV, MAX_VOLUME_ENV, max_volume_bytes
from napari_medgan.io.writers import save_dicom_series


def _header(shape, dtype=np.float32, **fields) -> nib.Nifti1Header:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_qform(np.eye(4), 1)
    for key, value in fields.items():
        hdr[key] = value
    return hdr


def _nifti_bytes(hdr: nib.Nifti1Header, data: bytes) -> bytes:
    return hdr.binaryblock + b"\x00" * 4 + data  # 348-byte header, 4 extension bytes, voxels


# ----------------------------------------------------------------------------- size
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_header_claiming_20000_cubed_is_refused_before_allocating(tmp_path, suffix):
    raw = _nifti_bytes(_header((20000, 20000, 20000)), b"\x00" * 4096)
    path = tmp_path / f"huge{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix == ".nii.gz" else raw)
    tracemalloc.start()
    try:
        with pytest.raises(VolumeError) as info:
            load_volume(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert message.startswith(f"{path}: header claims 20000x20000x20000 voxels")
    assert "--max-volume-gb" in message and "\n" not in message
    assert peak < 50e6  # nothing near the claimed 29 TiB (or even one GiB) was allocated


def test_gzip_bomb_is_refused_from_its_header_before_inflating(tmp_path):
    # 1024^3 float32 = 4 GiB claimed; the stream itself inflates to 64 MiB of zeros
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(_nifti_bytes(_header((1024, 1024, 1024)), b""))
        for _ in range(64):
            fh.write(b"\x00" * (1 << 20))
    assert path.stat().st_size < 1_000_000
    with pytest.raises(VolumeError, match=r"bomb\.nii\.gz: header claims 1024x1024x1024 "
                                          r"voxels \(4 GiB in memory\), over the 2 GiB"):
        load_volume(path)


def test_the_limit_is_the_users_to_raise(tmp_path, monkeypatch):
    data = np.zeros((40, 40, 40), np.float32)  # 250 KiB
    path = save_volume(Volume(data), tmp_path / "v.nrrd")
    monkeypatch.setenv(MAX_VOLUME_ENV, "0.0001")  # ~105 KiB
    with pytest.raises(VolumeError, match=r"\(250 KiB in memory\), over the 105 KiB limit"):
        load_volume(path)
    monkeypatch.setenv(MAX_VOLUME_ENV, "0.001")
    assert load_volume(path).shape == (40, 40, 40)
    monkeypatch.setenv(MAX_VOLUME_ENV, "lots")
    with pytest.raises(VolumeError, match=f"{MAX_VOLUME_ENV}: expected a positive number"):
        max_volume_bytes()


def test_nrrd_header_claiming_huge_sizes_is_refused(tmp_path):
    path = tmp_path / "huge.nrrd"
    path.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 30000 30000 30000\n"
                     b"encoding: raw\nendian: little\n\n" + b"\x00" * 64)
    with pytest.raises(VolumeError, match=r"huge\.nrrd: header claims 30000x30000x30000"):
        load_volume(path)


def test_dicom_series_too_large_for_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    save_dicom_series(Volume(np.zeros((6, 32, 32), np.int16)), tmp_path / "ct")
    monkeypatch.setenv(MAX_VOLUME_ENV, str(5000 / 1024**3))  # 5000 bytes < 6*32*32*2
    with pytest.raises(VolumeError, match=r"ct: header claims 32x32x6 voxels"):
        load_volume(tmp_path / "ct")


# ----------------------------------------------------------------------------- NIfTI header
def test_vox_offset_zero_is_refused(tmp_path):
    hdr = _header((4, 5, 6), np.int16, vox_offset=0)
    path = tmp_path / "offset0.nii"
    path.write_bytes(_nifti_bytes(hdr, b"\x01\x00" * 120))
    with pytest.raises(VolumeError, match=r"offset0\.nii: vox_offset 0 points inside the header"):
        load_volume(path)


@pytest.mark.parametrize(("value", "said"), [(0.0, "is 0; reading it as 1 mm"),
                                              (-3.0, "is -3; reading it as 3 mm")])
def test_zero_or_negative_pixdim_is_never_silent(tmp_path, value, said):
    good = tmp_path / "good.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.diag([2.0, 2, 2, 1])), good)
    raw = bytearray(good.read_bytes())
    raw[76 + 4 * 2: 76 + 4 * 3] = struct.pack("<f", value)  # pixdim[2]: axis y (from byte 76)
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw)), check=False)
    hdr["sform_code"] = 0  # the qform (built from pixdim) places the voxels
    path = tmp_path / "pixdim.nii"
    path.write_bytes(hdr.binaryblock + bytes(raw[348:]))
    with pytest.warns(UserWarning, match=rf"pixdim\.nii: pixdim of axis y {said}"):
        vol = load_volume(path)
    assert vol.spacing[1] == (1.0 if value == 0 else 3.0)


# ----------------------------------------------------------------------------- detached data
def _nhdr(tmp_path, data_file: str):
    raw = tmp_path / "v.raw"
    raw.write_bytes(np.arange(8, dtype=np.uint8).tobytes())
    path = tmp_path / "hdr" / "v.nhdr"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n"
                    f"data file: {data_file}\n")
    return path


@pytest.mark.parametrize("where", ["/etc/hostname", "../v.raw"])
def test_detached_nrrd_data_outside_its_folder_is_refused(tmp_path, where):
    path = _nhdr(tmp_path, where)
    with pytest.raises(VolumeError, match=rf"v\.nhdr: header names data file '{where}' outside "
                                          "its folder"):
        load_volume(path)


def test_outside_data_file_is_read_when_the_user_allows_it(tmp_path, monkeypatch):
    path = _nhdr(tmp_path, str(tmp_path / "v.raw"))
    monkeypatch.setenv(EXTERNAL_DATA_ENV, "1")
    np.testing.assert_array_equal(load_volume(path, is_label=False).array.ravel(), np.arange(8))


def test_data_file_beside_the_header_is_read(tmp_path):
    path = _nhdr(tmp_path, "v.raw")
    (tmp_path / "v.raw").rename(path.parent / "v.raw")
    assert load_volume(path, is_label=False).shape == (2, 2, 2)


def test_metaimage_data_file_outside_its_folder_is_refused(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "v.mhd"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n"
                    "ElementDataFile = /etc/hostname\n")
    with pytest.raises(VolumeError, match=r"v\.mhd: header names data file '/etc/hostname'"):
        load_volume(path)


def test_metaimage_claiming_compression_over_raw_bytes_is_refused(tmp_path):
    path = tmp_path / "liar.mha"
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
                     b"CompressedData = True\nCompressedDataSize = 128\nElementDataFile = LOCAL\n"
                     + np.arange(64, dtype=np.int16).tobytes())
    with pytest.raises(VolumeError, match=r"liar\.mha: CompressedData = True but the data is "
                                          "not a zlib stream"):
        load_volume(path)


def test_compressed_metaimage_written_by_simpleitk_still_reads(tmp_path):
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    path = tmp_path / "ok.mha"
    sitk.WriteImage(sitk.GetImageFromArray(data), str(path), True)
    np.testing.assert_array_equal(load_volume(path, is_label=False).array, data)


# ----------------------------------------------------------------------------- DICOM
def _series(tmp_path, n=8):
    vol = Volume(np.arange(n * 16, dtype=np.int16).reshape(n, 4, 4), spacing=(1, 1, 2),
                 origin=(0, 0, 10))
    return save_dicom_series(vol, tmp_path / "series")


def test_dicom_series_with_a_deleted_slice_is_refused_naming_the_gap(tmp_path):
    files = _series(tmp_path)
    files[3].unlink()
    with pytest.raises(VolumeError) as info:
        load_volume(tmp_path / "series")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'series'}: 1 slice(s) missing after 14.000 mm")
    assert "spacing 2.000 mm" in message and "\n" not in message


def test_dicom_series_with_a_truncated_slice_is_refused(tmp_path):
    files = _series(tmp_path)
    raw = files[4].read_bytes()
    files[4].write_bytes(raw[: len(raw) // 3])
    with pytest.raises(VolumeError, match=rf"{tmp_path / 'series'}: 1 slice\(s\) missing .*"
                                          r"not readable as part of the series: slice_0004\.dcm"):
        load_volume(tmp_path / "series")


def test_dicom_slices_sharing_one_position_are_refused(tmp_path):
    files = _series(tmp_path)
    for f in files[:4]:  # the first four slices all claim the first one's position
        img = sitk.ReadImage(str(f))
        img.SetMetaData("0020|0032", "0\\0\\10")
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(f))
        writer.Execute(img)
    with pytest.raises(VolumeError, match=r"series: 4 slices share the position 10\.000 mm"):
        load_volume(tmp_path / "series")


def test_an_intact_dicom_series_still_reads(tmp_path):
    _series(tmp_path)
    vol = load_volume(tmp_path / "series")
    assert vol.shape == (8, 4, 4)
    np.testing.assert_allclose(vol.spacing, (1, 1, 2))


# ----------------------------------------------------------------------------- CLI
def test_cli_reading_flags_set_the_limits_for_every_command(tmp_path, capsys, monkeypatch):
    from napari_medgan.cli import main

    monkeypatch.setenv(MAX_VOLUME_ENV, "2")  # main() sets these: monkeypatch restores them
    monkeypatch.setenv(EXTERNAL_DATA_ENV, "0")
    for folder in ("real", "fake"):
        (tmp_path / folder).mkdir()
        save_volume(Volume(np.zeros((16, 16, 16), np.float32)), tmp_path / folder / "a.nii.gz")
    argv = ["evaluate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
            "--out", str(tmp_path / "r.json"), "--max-volume-gb", "1e-6"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-medgan: error: ") and "a.nii.gz: header claims 16x16x16" in err
    assert "\n" not in err
    monkeypatch.setenv(MAX_VOLUME_ENV, "2")
    assert main(["evaluate", "--real", ".", "--fake", ".", "--max-volume-gb", "-1"]) == 2
    assert "--max-volume-gb: expected a positive number" in capsys.readouterr().err


# ----------------------------------------------------------------------------- lying fields
def test_a_damaged_gzip_body_fails_its_crc_instead_of_giving_wrong_voxels(tmp_path):
    path = save_volume(Volume(np.arange(4096, dtype=np.float32).reshape(16, 16, 16)),
                       tmp_path / "v.nii.gz")
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-100] ^= 0xFF  # one voxel byte; the stream's CRC still says the original
    body = bytearray(gzip.compress(bytes(raw)))
    body[-8:-4] = gzip.compress(gzip.decompress(path.read_bytes()))[-8:-4]  # the old CRC
    path.write_bytes(bytes(body))
    with pytest.raises(VolumeError, match=r"v\.nii\.gz: cannot read as NIfTI .*CRC"):
        load_volume(path)


def test_a_stream_shorter_than_its_header_is_refused_for_what_it_holds(tmp_path):
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(_nifti_bytes(_header((500, 500, 500), np.uint8, vox_offset=352),
                                              b"\0" * 64)))
    with pytest.raises(VolumeError, match=r"short\.nii\.gz: file is truncated: the header needs "
                                          r"125000352 bytes, the compressed stream holds 416"):
        load_volume(path)


_MHA = {"ObjectType": "Image", "NDims": "3", "DimSize": "4 4 4", "ElementType": "MET_SHORT"}


@pytest.mark.parametrize(("field", "value", "said"), [
    ("NDims", "100000", "NDims = '100000' is not a number of dimensions"),  # crashed ITK
    ("NDims", "-1", "NDims = '-1' is not a number of dimensions"),
    ("DimSize", "4 4", "DimSize = '4 4' does not give 3 positive sizes"),
    ("ElementType", "MET_STRING", "ElementType = 'MET_STRING' is not a numeric voxel type"),
])
def test_metaimage_fields_itk_trusts_are_checked_first(tmp_path, field, value, said):
    fields = dict(_MHA, **{field: value}, ElementDataFile="LOCAL")
    path = tmp_path / "v.mha"
    path.write_bytes("".join(f"{k} = {v}\n" for k, v in fields.items()).encode()
                     + np.zeros(64, np.int16).tobytes())
    with pytest.raises(VolumeError, match=rf"v\.mha: {said}"):
        load_volume(path)


def test_metaimage_compressed_size_must_match_the_data(tmp_path):
    import zlib

    data = zlib.compress(np.arange(64, dtype=np.int16).tobytes())
    fields = dict(_MHA, CompressedData="True", CompressedDataSize="10", ElementDataFile="LOCAL")
    path = tmp_path / "v.mha"
    path.write_bytes("".join(f"{k} = {v}\n" for k, v in fields.items()).encode() + data)
    with pytest.raises(VolumeError, match=rf"CompressedDataSize = 10 but {len(data)} bytes"):
        load_volume(path)


def test_nrrd_negative_byte_skip_is_refused(tmp_path):
    path = tmp_path / "v.nrrd"
    path.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n"
                     b"endian: little\nbyte skip: -5\n\n" + np.zeros(64, np.int16).tobytes())
    with pytest.raises(VolumeError, match=r"v\.nrrd: byte skip '-5' is not valid"):
        load_volume(path)


def _retag(path, tag, value):
    img = sitk.ReadImage(str(path))
    img.SetMetaData(tag, value)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(path))
    writer.Execute(img)


def test_a_dicom_slice_turned_unlike_the_others_is_refused(tmp_path):
    files = _series(tmp_path)
    _retag(files[5], "0020|0037", "1\\0\\0\\0\\0\\1")
    with pytest.raises(VolumeError, match=r"series: slice_0005\.dcm is oriented 1.0.0.0.0.1, "
                                          "unlike the other slices"):
        load_volume(tmp_path / "series")


def test_a_dicom_slice_without_a_valid_position_is_refused(tmp_path):
    files = _series(tmp_path)
    _retag(files[2], "0020|0032", "0\\0\\nan")
    with pytest.raises(VolumeError, match=r"series: slice_0002\.dcm has no valid "
                                          "ImagePositionPatient"):
        load_volume(tmp_path / "series")
