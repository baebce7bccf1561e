"""Hostile NIfTI files (.nii and .nii.gz): truncations of the file and of its gzip stream, a
corrupted deflate body, header byte flips, lying dims/datatype/vox_offset/pixdim/qform/sform/
scl_slope, garbage magic, NaN voxels, gzip bombs."""

from __future__ import annotations

import io
from functools import partial

import numpy as np

from fuzz_cases import Input, write
from fuzz_volumes import F32, I16, NX, NY, NZ, bomb_stream, common_inputs, gzip_bytes


def _nifti_raw(bases, dtype: str = I16) -> bytes:
    return bases.file(f"{dtype}.nii")


def _header(raw: bytes):
    import nibabel as nib

    return nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)


def _edit(raw: bytes, **fields) -> bytes:
    """The NIfTI bytes with header fields replaced (values written as given, unchecked)."""
    hdr = _header(raw)
    for key, value in fields.items():
        hdr[key] = value
    return hdr.binaryblock + raw[348:]


def _dims(*sizes: int) -> list[int]:
    dims = [len(sizes), *sizes]
    return dims + [1] * (8 - len(dims))


def _nifti_image_bytes(kind: str) -> bytes:
    import nibabel as nib

    from fuzz_cases import base_volume

    vol = base_volume(I16)
    data = vol.array.transpose(2, 1, 0)
    affine = vol.affine_ras()
    if kind == "big-endian":
        img = nib.Nifti1Image(data, affine, header=nib.Nifti1Header(endianness=">"))
    else:
        img = nib.Nifti2Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return img.to_bytes()


def _nifti(slug: str, fault: str, make, expect: str = "refuse", reference: str | None = None,
           suffixes=(".nii", ".nii.gz"), encode: bool = True, sample: bool = True,
           timeout: float = 30.0) -> list[Input]:
    """One input per suffix; ``make(bases) -> bytes`` gives the uncompressed file
    (gzipped for ``.nii.gz`` unless ``encode`` is False: then ``make`` gives the final bytes
    for every suffix)."""
    out = []
    for suffix in suffixes:
        group = "nifti-gz" if suffix == ".nii.gz" else "nifti"

        def build(folder, bases, suffix=suffix):
            data = make(bases)
            if encode and suffix == ".nii.gz":
                data = gzip_bytes(data)
            return write(folder / f"vol{suffix}", data)

        out.append(Input(f"{group}/{slug}", group, fault, build, expect,
                         reference=reference or (I16 if expect == "same" else None),
                         sample=sample, timeout=timeout))
    return out


def _nifti_inputs() -> list[Input]:
    data_bytes = NX * NY * NZ * 2
    end = 352 + data_bytes
    cases: list[Input] = []
    add = cases.extend

    # -- controls: the same voxels must come back
    add(_nifti("valid-int16", "control", _nifti_raw, "same"))
    add(_nifti("valid-float32", "control", partial(_nifti_raw, dtype=F32), "same",
               reference=F32))
    add(_nifti("written-by-package", "control", lambda b: b.file("int16.nii.gz"), "same",
               suffixes=(".nii.gz",), encode=False))
    add(_nifti("big-endian", "control", lambda b: _nifti_image_bytes("big-endian"), "same"))
    add(_nifti("nifti2", "control", lambda b: _nifti_image_bytes("nifti2"), "same"))
    add(_nifti("dim7-singletons", "singleton extra dims",
               lambda b: _edit(_nifti_raw(b), dim=_dims(NX, NY, NZ, 1, 1, 1, 1)), "same"))
    add(_nifti("bitpix-lies", "lying bitpix", lambda b: _edit(_nifti_raw(b), bitpix=64), "same"))
    add(_nifti("gzip-content-in-nii", "wrong compression for suffix",
               lambda b: gzip_bytes(_nifti_raw(b)), "same", suffixes=(".nii",), encode=False))
    add(_nifti("plain-content-in-nii-gz", "wrong compression for suffix", _nifti_raw, "same",
               suffixes=(".nii.gz",), encode=False))

    # -- truncations of the uncompressed file (for .nii.gz: a complete stream of a short file)
    for offset in (1, 4, 40, 200, 347, 348, 351, 352, 353, 352 + data_bytes // 2, end - 1):
        add(_nifti(f"truncated-at-{offset}", "truncated file",
                   lambda b, n=offset: _nifti_raw(b)[:n]))
    # -- truncations of the gzip stream itself
    for frac in ("1", "10", "20", "1/4", "1/2", "-16"):
        def cut(bases, frac=frac):
            data = gzip_bytes(_nifti_raw(bases))
            if "/" in frac:
                num, den = (int(v) for v in frac.split("/"))
                return data[: len(data) * num // den]
            n = int(frac)
            return data[:n] if n > 0 else data[:n]
        slug = "gz-stream-cut-" + frac.replace("/", "of").replace("-", "end-minus-")
        add(_nifti(slug, "truncated gzip stream", cut, suffixes=(".nii.gz",), encode=False))
    for tail in (8, 4, 1):  # only the CRC/size trailer is cut: the voxels are all there
        add(_nifti(f"gz-trailer-cut-{tail}", "truncated gzip trailer",
                   lambda b, t=tail: gzip_bytes(_nifti_raw(b))[:-t], "any", suffixes=(".nii.gz",),
                   encode=False))
    # -- corrupted deflate body: the CRC says so; accepting it gives wrong voxels
    for seed in range(3):
        def corrupt(bases, seed=seed):
            data = bytearray(gzip_bytes(_nifti_raw(bases)))
            rng = np.random.default_rng(seed)
            pos = int(rng.integers(len(data) // 3, len(data) - 16))
            data[pos] ^= 0x5A
            return bytes(data)
        add(_nifti(f"gz-body-corrupt-{seed}", "corrupt gzip body", corrupt, "same",
                   suffixes=(".nii.gz",), encode=False))
    add(_nifti("gz-crc-flipped", "corrupt gzip trailer",
               lambda b: (lambda d: d[:-6] + bytes([d[-6] ^ 0xFF]) + d[-5:])(gzip_bytes(_nifti_raw(b))),
               "same", suffixes=(".nii.gz",), encode=False))

    # -- random byte flips in the header
    from fuzz_cases import flip_bytes

    for seed in range(12):
        add(_nifti(f"header-flips-{seed}", "header byte flips",
                   lambda b, s=seed: flip_bytes(_nifti_raw(b), s, 0, 348, 1 + s % 3), "any"))

    # -- lying dims
    lies = {
        "dims-20000-cubed": _dims(20000, 20000, 20000),
        "dims-32767-7d": [7] + [32767] * 7,
        "dims-zero": _dims(NX, NY, 0),
        "dims-negative": _dims(NX, -NY, NZ),
        "dim0-zero": [0, NX, NY, NZ, 1, 1, 1, 1],
        "dim0-eight": [8, NX, NY, NZ, 1, 1, 1, 1],
        "dim0-negative": [-3, NX, NY, NZ, 1, 1, 1, 1],
        "dims-2d": _dims(NX, NY * NZ),
        "dims-4d": _dims(NX, NY, NZ // 2, 2),
        "dims-6d": _dims(4, 4, 2, 3, 5, 7),
        "dims-one-more-row": _dims(NX, NY + 1, NZ),
    }
    for slug, dims in lies.items():
        add(_nifti(slug, "lying dims" if "20000" not in slug and "32767" not in slug
                   else "huge dims", lambda b, d=dims: _edit(_nifti_raw(b), dim=d)))
    add(_nifti("dims-1024-cubed-float32", "huge dims",
               lambda b: _edit(_nifti_raw(b), dim=_dims(1024, 1024, 1024), datatype=16,
                               bitpix=32)))
    # under any sane size limit (1 GB), so only the missing voxels can give it away
    add(_nifti("dims-1000-cubed-uint8", "lying dims",
               lambda b: _edit(_nifti_raw(b), dim=_dims(1000, 1000, 1000), datatype=2,
                               bitpix=8)))
    for code in (0, 1, 32, 128, 999, 2304):
        add(_nifti(f"datatype-{code}", "bad datatype code",
                   lambda b, c=code: _edit(_nifti_raw(b), datatype=c)))

    # -- vox_offset
    add(_nifti("vox-offset-zero", "vox_offset", lambda b: _edit(_nifti_raw(b), vox_offset=0),
               "same"))
    for slug, value in (("vox-offset-353", 353), ("vox-offset-beyond-end", 1e6),
                        ("vox-offset-3e9", 3e9), ("vox-offset-negative", -352),
                        ("vox-offset-nan", float("nan"))):
        add(_nifti(slug, "vox_offset", lambda b, v=value: _edit(_nifti_raw(b), vox_offset=v)))

    # -- pixdim / qform / sform
    nan, inf = float("nan"), float("inf")
    for slug, value in (("zero", 0.0), ("negative", -0.8), ("nan", nan), ("inf", inf)):
        pix = [-1.0, value, 0.9, 1.5, 1, 1, 1, 1]  # qfac -1 as our writer leaves it
        add(_nifti(f"pixdim-{slug}-sform-ok", "pixdim",
                   lambda b, p=pix: _edit(_nifti_raw(b), pixdim=p), "same"))
        add(_nifti(f"pixdim-{slug}-qform-only", "pixdim",
                   lambda b, p=pix: _edit(_nifti_raw(b), pixdim=p, sform_code=0), "any"))
        add(_nifti(f"pixdim-{slug}-no-xform", "pixdim",
                   lambda b, p=pix: _edit(_nifti_raw(b), pixdim=p, sform_code=0, qform_code=0),
                   "any"))
    add(_nifti("qform-nan-sform-ok", "nan qform/sform",
               lambda b: _edit(_nifti_raw(b), quatern_b=nan, qoffset_x=nan), "same"))
    add(_nifti("sform-nan", "nan qform/sform",
               lambda b: _edit(_nifti_raw(b), srow_x=[nan, 0, 0, 0]), "any"))
    add(_nifti("sform-and-qform-nan", "nan qform/sform",
               lambda b: _edit(_nifti_raw(b), srow_x=[nan, 0, 0, 0], quatern_b=nan), "any"))
    add(_nifti("sform-singular", "singular sform",
               lambda b: _edit(_nifti_raw(b), srow_z=[0, 0, 0, 0]), "any"))
    add(_nifti("xform-codes-out-of-range", "xform codes",
               lambda b: _edit(_nifti_raw(b), sform_code=99, qform_code=-1), "any"))

    # -- scaling
    add(_nifti("scl-slope-nan", "scl_slope", lambda b: _edit(_nifti_raw(b), scl_slope=nan),
               "same"))
    add(_nifti("scl-slope-zero", "scl_slope", lambda b: _edit(_nifti_raw(b), scl_slope=0.0),
               "same"))
    add(_nifti("scl-slope-inf", "scl_slope", lambda b: _edit(_nifti_raw(b), scl_slope=inf),
               "any"))
    add(_nifti("scl-slope-huge", "scl_slope", lambda b: _edit(_nifti_raw(b), scl_slope=3e38),
               "any"))
    add(_nifti("scl-inter-nan", "scl_slope",
               lambda b: _edit(_nifti_raw(b), scl_slope=1.0, scl_inter=nan), "any"))

    # -- magic and header size
    add(_nifti("magic-garbage", "garbage magic",
               lambda b: _edit(_nifti_raw(b), magic=b"xyz")))
    add(_nifti("magic-pair-in-single-file", "garbage magic",
               lambda b: _edit(_nifti_raw(b), magic=b"ni1"), "any"))
    add(_nifti("sizeof-hdr-zero", "garbage magic",
               lambda b: _edit(_nifti_raw(b), sizeof_hdr=0), "any"))
    add(_nifti("sizeof-hdr-540", "garbage magic",
               lambda b: _edit(_nifti_raw(b), sizeof_hdr=540), "any"))

    # -- voxel values
    def nan_voxels(bases, value=nan, every=False):
        raw = bytearray(_nifti_raw(bases, F32))
        if every:
            raw[352:] = np.full(NX * NY * NZ, value, np.float32).tobytes()
        else:
            raw[352 + 400: 352 + 404] = np.float32(value).tobytes()
        return bytes(raw)

    add(_nifti("nan-voxel", "non-finite voxels", nan_voxels))
    add(_nifti("inf-voxel", "non-finite voxels", partial(nan_voxels, value=inf)))
    add(_nifti("all-nan", "non-finite voxels", partial(nan_voxels, every=True)))

    # -- gzip bombs (header claims 1024^3 float32 = 4 GiB)
    def bomb_header(bases):
        return _edit(_nifti_raw(bases), dim=_dims(1024, 1024, 1024), datatype=16, bitpix=32)[:352]

    add(_nifti("gzip-bomb-short-stream", "gzip bomb",
               lambda b: gzip_bytes(bomb_header(b) + bytes(1 << 20)), suffixes=(".nii.gz",),
               encode=False))
    add(_nifti("gzip-bomb-256mb", "gzip bomb",
               lambda b: bomb_stream(bomb_header(b), 256 << 20, 31), suffixes=(".nii.gz",),
               encode=False, sample=False, timeout=60.0))
    add(_nifti("gz-trailing-garbage", "trailing garbage",
               lambda b: gzip_bytes(_nifti_raw(b)) + b"garbage after the stream", "any",
               suffixes=(".nii.gz",), encode=False))

    for suffix, group in ((".nii", "nifti"), (".nii.gz", "nifti-gz")):
        cases.extend(common_inputs(group, "vol", suffix))
    return cases


def inputs() -> list[Input]:
    return _nifti_inputs()
