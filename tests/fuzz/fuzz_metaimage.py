"""Hostile MetaImage files: attached (.mha) and detached (.mhd + raw), hand-written headers over
the base voxels: truncations, header byte flips, lying DimSize/NDims/ElementType/channels,
CompressedData over raw bytes, lying CompressedDataSize, zlib bombs, ElementDataFile outside
the header's folder (absolute, ``../``, LIST, pattern), a data file that is a folder."""

from __future__ import annotations

import zlib
from functools import partial

import numpy as np

from fuzz_cases import Input, write
from fuzz_volumes import (F32, I16, NX, NY, NZ, bomb_stream, common_inputs, format_extra,
                          outside_folder, voxels)


_MHA_FIELDS = [
    ("ObjectType", "Image"), ("NDims", "3"), ("BinaryData", "True"),
    ("BinaryDataByteOrderMSB", "False"), ("CompressedData", "False"),
    ("TransformMatrix", "1 0 0 0 1 0 0 0 1"), ("Offset", "-10.5 20.25 30"),
    ("CenterOfRotation", "0 0 0"), ("AnatomicalOrientation", "RAI"),
    ("ElementSpacing", "0.8 0.9 1.5"), ("DimSize", f"{NX} {NY} {NZ}"),
    ("ElementType", "MET_SHORT"), ("ElementDataFile", "LOCAL"),
]


def _mha_header(changes: dict | None = None, extra=()) -> str:
    """Header text; ``changes`` replaces or (None) removes fields; new fields and ``extra``
    lines go before ``ElementDataFile``, which must be last."""
    changes = dict(changes or {})
    lines = []
    for key, value in _MHA_FIELDS[:-1]:
        value = changes.pop(key, value)
        if value is not None:
            lines.append(f"{key} = {value}")
    last = changes.pop("ElementDataFile", "LOCAL")
    lines += [f"{k} = {v}" for k, v in changes.items() if v is not None]
    lines += list(extra)
    if last is not None:
        lines.append(f"ElementDataFile = {last}")
    return "\n".join(lines) + "\n"


def _mha_bytes(changes=None, data: bytes | None = None, dtype: str = I16, extra=()) -> bytes:
    return _mha_header(changes, extra).encode() + (voxels(dtype) if data is None else data)


def _mha(slug, fault, make, expect="refuse", reference=None, sample=True, timeout=30.0):
    def build(folder, bases):
        return write(folder / "vol.mha", make(bases))

    return Input(f"mha/{slug}", "mha", fault, build, expect,
                 reference=reference or (I16 if expect == "same" else None), sample=sample,
                 timeout=timeout)


def _zlib(data: bytes) -> bytes:
    return zlib.compress(data, 6)


def _mha_inputs() -> list[Input]:
    from fuzz_cases import flip_bytes

    header_len = len(_mha_header())
    total = len(_mha_bytes())
    comp = _zlib(voxels(I16))
    zipped = {"CompressedData": "True", "CompressedDataSize": str(len(comp))}
    cases = [
        _mha("valid-raw", "control", lambda b: _mha_bytes(), "same"),
        _mha("valid-float32", "control",
             lambda b: _mha_bytes({"ElementType": "MET_FLOAT"}, dtype=F32), "same",
             reference=F32),
        _mha("valid-compressed", "control", lambda b: _mha_bytes(zipped, comp), "same"),
        _mha("written-by-package", "control", lambda b: b.file("int16.mha"), "same"),
        _mha("valid-big-endian", "control", lambda b: _mha_bytes(
            {"BinaryDataByteOrderMSB": "True"}, voxels(I16, ">")), "same"),
        _mha("header-size-minus-one", "control",
             lambda b: _mha_bytes({"HeaderSize": "-1"}), "same"),
        _mha("ndims-7-singletons", "singleton extra dims", lambda b: _mha_bytes({
            "NDims": "7", "DimSize": f"{NX} {NY} {NZ} 1 1 1 1",
            "TransformMatrix": " ".join("1" if i % 8 == 0 else "0" for i in range(49)),
            "Offset": "-10.5 20.25 30 0 0 0 0", "CenterOfRotation": "0 0 0 0 0 0 0",
            "ElementSpacing": "0.8 0.9 1.5 1 1 1 1", "AnatomicalOrientation": None}), "same"),
    ]
    for n in (1, 10, header_len // 2, header_len - 2, header_len + (total - header_len) // 2,
              total - 1):
        cases.append(_mha(f"truncated-at-{n}", "truncated file", lambda b, n=n: _mha_bytes()[:n]))
    for frac in (2, 4):
        cases.append(_mha(f"compressed-cut-1of{frac}", "truncated zlib stream",
                          lambda b, f=frac: _mha_bytes(zipped, comp[: len(comp) // f])))
    for seed in range(10):
        cases.append(_mha(f"header-flips-{seed}", "header byte flips",
                          lambda b, s=seed: flip_bytes(_mha_bytes(), s, 0, header_len - 25,
                                                       1 + s % 3), "any"))
    lies = {
        "dimsize-20000-cubed": ("huge dims", {"DimSize": "20000 20000 20000"}),
        "dimsize-zero": ("lying dims", {"DimSize": f"{NX} 0 {NZ}"}),
        "dimsize-negative": ("lying dims", {"DimSize": f"{NX} -{NY} {NZ}"}),
        "dimsize-garbage": ("lying dims", {"DimSize": "a b c"}),
        "ndims-2": ("lying dims", {"NDims": "2", "DimSize": f"{NX} {NY * NZ}",
                                   "TransformMatrix": "1 0 0 1", "Offset": "0 0",
                                   "CenterOfRotation": "0 0", "ElementSpacing": "0.8 0.9",
                                   "AnatomicalOrientation": None}),
        "ndims-4": ("lying dims", {"NDims": "4", "DimSize": f"{NX} {NY} {NZ // 2} 2",
                                   "TransformMatrix": "1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1",
                                   "Offset": "0 0 0 0", "CenterOfRotation": "0 0 0 0",
                                   "ElementSpacing": "0.8 0.9 1.5 1",
                                   "AnatomicalOrientation": None}),
        "ndims-mismatch": ("lying dims", {"DimSize": f"{NX} {NY}"}),
        "ndims-zero": ("lying dims", {"NDims": "0"}),
        "ndims-huge": ("lying dims", {"NDims": "100000"}),
        "ndims-negative": ("lying dims", {"NDims": "-1"}),
        "element-type-unknown": ("wrong type string", {"ElementType": "MET_FOO"}),
        "element-type-string": ("wrong type string", {"ElementType": "MET_STRING"}),
        "element-type-missing": ("wrong type string", {"ElementType": None}),
        "element-type-double-over-short": ("wrong type string", {"ElementType": "MET_DOUBLE"}),
        "channels-3": ("lying dims", {"ElementNumberOfChannels": "3"}),
        "channels-zero": ("lying dims", {"ElementNumberOfChannels": "0"}),
        "channels-negative": ("lying dims", {"ElementNumberOfChannels": "-1"}),
        "compressed-over-raw": ("compressed flag over raw data", {"CompressedData": "True"}),
        "compressed-over-raw-with-size": ("compressed flag over raw data", {
            "CompressedData": "True", "CompressedDataSize": str(NX * NY * NZ * 2)}),
        "header-size-huge": ("data offset beyond end", {"HeaderSize": "1000000000"}),
        "element-data-file-missing": ("missing data file", {"ElementDataFile": None}),
        "element-data-file-outside": ("data file outside folder",
                                      {"ElementDataFile": "/etc/hostname"}),
    }
    for slug, (fault, change) in lies.items():
        cases.append(_mha(slug, fault, lambda b, c=change: _mha_bytes(c)))
    cases.append(_mha("compressed-size-small", "truncated zlib stream",
                      lambda b: _mha_bytes({"CompressedData": "True", "CompressedDataSize": "10"},
                                           comp), "same"))
    cases.append(_mha("compressed-size-huge", "lying compressed size",
                      lambda b: _mha_bytes({"CompressedData": "True",
                                            "CompressedDataSize": "1000000000000"}, comp), "any"))
    for slug, value in (("zero", "0 0.9 1.5"), ("negative", "-0.8 0.9 1.5"),
                        ("nan", "nan 0.9 1.5"), ("inf", "inf 0.9 1.5"),
                        ("huge", "1e308 1e308 1e308"), ("garbage", "a b c")):
        cases.append(_mha(f"spacing-{slug}", "bad spacing/direction",
                          lambda b, v=value: _mha_bytes({"ElementSpacing": v}), "any"))
    for slug, value in (("singular", "0 0 0 0 0 0 0 0 0"), ("nan", "nan 0 0 0 1 0 0 0 1")):
        cases.append(_mha(f"transform-{slug}", "bad spacing/direction",
                          lambda b, v=value: _mha_bytes({"TransformMatrix": v}), "any"))
    cases.append(_mha("offset-nan", "bad origin", lambda b: _mha_bytes({"Offset": "nan 0 0"}),
                      "any"))
    cases.append(_mha("object-type-transform", "garbage magic",
                      lambda b: _mha_bytes({"ObjectType": "Transform"}), "any"))

    def nan_data(bases, every=False):
        data = np.frombuffer(voxels(F32), "<f4").copy()
        data[[17] if not every else slice(None)] = np.nan
        return _mha_bytes({"ElementType": "MET_FLOAT"}, data.tobytes())

    cases.append(_mha("nan-voxel", "non-finite voxels", nan_data))
    cases.append(_mha("all-nan", "non-finite voxels", partial(nan_data, every=True)))
    bomb = {"ElementType": "MET_FLOAT", "DimSize": "1024 1024 1024", "CompressedData": "True"}
    short = _zlib(bytes(1 << 20))
    cases.append(_mha("zlib-bomb-short-stream", "gzip bomb", lambda b: _mha_bytes(
        {**bomb, "CompressedDataSize": str(len(short))}, short)))

    def genuine(bases):
        stream = bomb_stream(b"", 256 << 20, 15)
        return _mha_bytes({**bomb, "CompressedDataSize": str(len(stream))}, stream)

    cases.append(_mha("zlib-bomb-256mb", "gzip bomb", genuine, sample=False, timeout=60.0))
    cases.extend(common_inputs("mha", "vol", ".mha"))
    return cases


def _mhd(slug, fault, build_data, changes, expect="refuse", data_name="vol.raw", extra=()):
    def build(folder, bases):
        build_data(folder)
        header = _mha_header({"ElementDataFile": data_name, **changes})
        header += "".join(line + "\n" for line in extra)  # LIST: one data file per line
        return write(folder / "vol.mhd", header)

    return Input(f"mhd/{slug}", "mhd", fault, build, expect,
                 reference=I16 if expect == "same" else None)


def _absolute_outside(folder, bases):
    absolute = outside_folder(folder) / "vol.raw"
    write(absolute, voxels(I16))
    return write(folder / "vol.mhd", _mha_header({"ElementDataFile": str(absolute)}))


def _mhd_inputs() -> list[Input]:
    good = lambda f: write(f / "vol.raw", voxels(I16))  # noqa: E731
    n = len(voxels(I16))
    comp = _zlib(voxels(I16))

    def slices_outside(folder):
        for k in range(NZ):
            write(outside_folder(folder) / f"slice{k:02d}.raw",
                  voxels(I16)[k * NX * NY * 2:(k + 1) * NX * NY * 2])

    def dotdot(folder):
        write(outside_folder(folder) / "vol.raw", voxels(I16))

    cases = [
        _mhd("valid-raw", "control", good, {}, "same"),
        _mhd("valid-compressed", "control", lambda f: write(f / "vol.zraw", comp),
             {"CompressedData": "True", "CompressedDataSize": str(len(comp))}, "same",
             data_name="vol.zraw"),
        _mhd("data-file-missing", "missing data file", lambda f: None, {}),
        Input("mhd/data-file-absolute-outside", "mhd", "data file outside folder",
              _absolute_outside, "refuse"),
        _mhd("data-file-etc-hostname", "data file outside folder", lambda f: None, {},
             data_name="/etc/hostname"),
        _mhd("data-file-dotdot", "data file outside folder", dotdot, {},
             data_name="../{folder}-outside/vol.raw"),
        _mhd("data-file-list-outside", "data file outside folder", slices_outside, {},
             data_name="LIST", extra=[f"../{{folder}}-outside/slice{k:02d}.raw"
                                      for k in range(NZ)]),
        _mhd("data-file-pattern-outside", "data file outside folder", slices_outside, {},
             data_name=f"../{{folder}}-outside/slice%02d.raw 0 {NZ - 1} 1"),
        _mhd("data-file-is-folder", "data file is a folder", lambda f: (f / "vol.raw").mkdir(),
             {}),
        _mhd("data-file-is-header", "data file is the header", lambda f: None, {},
             data_name="vol.mhd"),
        _mhd("compressed-over-raw", "compressed flag over raw data", good,
             {"CompressedData": "True"}),
        _mhd("dimsize-20000-cubed", "huge dims", good, {"DimSize": "20000 20000 20000"}),
    ]
    for cut in (0, 1, n // 2, n - 1):
        cases.append(_mhd(f"raw-truncated-at-{cut}", "truncated data file",
                          lambda f, c=cut: write(f / "vol.raw", voxels(I16)[:c]), {}))
    cases.extend(common_inputs("mhd", "vol", ".mhd"))
    return [format_extra(c) for c in cases]


def inputs() -> list[Input]:
    return [*_mha_inputs(), *_mhd_inputs()]
