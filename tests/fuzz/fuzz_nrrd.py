"""Hostile NRRD files: attached (.nrrd) and detached (.nhdr + data file), hand-written headers
over the base voxels: truncations, header byte flips, lying sizes/dimension/type/encoding,
gzip over raw bytes, gzip bombs, data files outside the header's folder (absolute, ``../``,
LIST, format pattern), a data file that is a folder or the header itself."""

from __future__ import annotations

from functools import partial

import numpy as np

from fuzz_cases import Input, write
from fuzz_volumes import (F32, I16, NX, NY, NZ, bomb_stream, common_inputs, format_extra,
                          gzip_bytes, outside_folder, voxels)


_NRRD_FIELDS = [
    ("type", "short"), ("dimension", "3"), ("space", "left-posterior-superior"),
    ("sizes", f"{NX} {NY} {NZ}"), ("space directions", "(0.8,0,0) (0,0.9,0) (0,0,1.5)"),
    ("kinds", "domain domain domain"), ("endian", "little"), ("encoding", "raw"),
    ("space origin", "(-10.5,20.25,30)"),
]


def _nrrd_header(changes: dict | None = None, magic: str = "NRRD0004", extra=()) -> str:
    """Header text (ending with the blank line); ``changes`` replaces or (value None)
    removes fields; ``extra`` appends lines."""
    changes = dict(changes or {})
    lines = [magic]
    for key, value in _NRRD_FIELDS:
        value = changes.pop(key, value)
        if value is not None:
            lines.append(f"{key}: {value}")
    lines += [f"{k}: {v}" for k, v in changes.items() if v is not None]
    lines += list(extra)
    return "\n".join(lines) + "\n\n"


def _nrrd(slug, fault, make, expect="refuse", reference=None, sample=True, timeout=30.0):
    def build(folder, bases):
        return write(folder / "vol.nrrd", make(bases))

    return Input(f"nrrd/{slug}", "nrrd", fault, build, expect,
                 reference=reference or (I16 if expect == "same" else None), sample=sample,
                 timeout=timeout)


def _nrrd_bytes(changes=None, data: bytes | None = None, dtype: str = I16, **kw) -> bytes:
    return _nrrd_header(changes, **kw).encode() + (voxels(dtype) if data is None else data)


def _nrrd_inputs() -> list[Input]:
    from fuzz_cases import flip_bytes

    raw = partial(_nrrd_bytes)
    header_len = len(_nrrd_header())
    total = len(_nrrd_bytes())
    gz = {"encoding": "gzip"}
    cases = [
        _nrrd("valid-raw", "control", lambda b: raw(), "same"),
        _nrrd("valid-gzip", "control", lambda b: _nrrd_bytes(gz, gzip_bytes(voxels(I16))), "same"),
        _nrrd("valid-float32", "control",
              lambda b: _nrrd_bytes({"type": "float"}, dtype=F32), "same", reference=F32),
        _nrrd("written-by-package", "control", lambda b: b.file("int16.nrrd"), "same"),
        _nrrd("valid-ascii", "control", lambda b: _nrrd_bytes(
            {"encoding": "ascii"},
            " ".join(str(v) for v in np.frombuffer(voxels(I16), "<i2")).encode() + b"\n"),
            "same"),
        _nrrd("valid-big-endian", "control",
              lambda b: _nrrd_bytes({"endian": "big"}, voxels(I16, ">")), "same"),
        _nrrd("byte-skip-minus-one", "control",
              lambda b: _nrrd_bytes({"byte skip": "-1"}, b"padding" + voxels(I16)), "same"),
        _nrrd("comments-and-key-values", "control", lambda b: _nrrd_bytes(
            extra=["# a comment", "medgan:=not a label", "unknown field: 42"]), "same"),
        _nrrd("dim7-singletons", "singleton extra dims", lambda b: _nrrd_bytes({
            "dimension": "7", "sizes": f"{NX} {NY} {NZ} 1 1 1 1",
            "space directions": "(0.8,0,0) (0,0.9,0) (0,0,1.5) none none none none",
            "kinds": "domain domain domain list list list list"}), "same"),
    ]
    for n in (1, 5, 20, header_len - 1, header_len + (total - header_len) // 2, total - 1):
        cases.append(_nrrd(f"truncated-at-{n}", "truncated file",
                           lambda b, n=n: _nrrd_bytes()[:n]))
    for frac in (2, 4):
        cases.append(_nrrd(f"gzip-stream-cut-1of{frac}", "truncated gzip stream",
                           lambda b, f=frac: _nrrd_bytes(gz, (lambda d: d[: len(d) // f])(
                               gzip_bytes(voxels(I16))))))
    for seed in range(10):
        cases.append(_nrrd(f"header-flips-{seed}", "header byte flips",
                           lambda b, s=seed: flip_bytes(_nrrd_bytes(), s, 9, header_len - 2,
                                                        1 + s % 3), "any"))
    lies = {
        "sizes-20000-cubed": ("huge dims", {"sizes": "20000 20000 20000"}),
        "sizes-zero": ("lying dims", {"sizes": f"{NX} 0 {NZ}"}),
        "sizes-negative": ("lying dims", {"sizes": f"{NX} -{NY} {NZ}"}),
        "sizes-garbage": ("lying dims", {"sizes": "sixteen fifteen fourteen"}),
        "dimension-2": ("lying dims", {"dimension": "2", "sizes": f"{NX} {NY * NZ}",
                                        "space": None, "space origin": None,
                                        "space directions": None, "kinds": "domain domain"}),
        "dimension-4": ("lying dims", {
            "dimension": "4", "sizes": f"{NX} {NY} {NZ // 2} 2",
            "space directions": "(0.8,0,0) (0,0.9,0) (0,0,1.5) none",
            "kinds": "domain domain domain list"}),
        "dimension-mismatch": ("lying dims", {"sizes": f"{NX} {NY}"}),
        "dimension-zero": ("lying dims", {"dimension": "0"}),
        "dimension-huge": ("lying dims", {"dimension": "100000"}),
        "type-unknown": ("wrong type string", {"type": "quaternion"}),
        "type-block": ("wrong type string", {"type": "block", "block size": "2"}),
        "type-missing": ("wrong type string", {"type": None}),
        "type-double-over-short": ("wrong type string", {"type": "double"}),
        "encoding-bzip2-over-raw": ("compressed flag over raw data", {"encoding": "bzip2"}),
        "encoding-unknown": ("wrong type string", {"encoding": "rot13"}),
        "line-skip-1000": ("data offset beyond end", {"line skip": "1000"}),
        "byte-skip-beyond-end": ("data offset beyond end", {"byte skip": "1000000"}),
        "data-file-outside": ("data file outside folder", {"data file": "../outside/vol.raw"}),
    }
    for slug, (fault, change) in lies.items():
        def make(bases, change=change, slug=slug):
            return _nrrd_bytes(change)

        if slug == "data-file-outside":
            def build(folder, bases, change=change):
                write(folder.parent / f"{folder.name}-outside" / "vol.raw", voxels(I16))
                text = _nrrd_header({"data file": f"../{folder.name}-outside/vol.raw"})
                return write(folder / "vol.nrrd", text)

            cases.append(Input("nrrd/data-file-outside", "nrrd", fault, build, "refuse"))
            continue
        cases.append(_nrrd(slug, fault, make))
    # zlib's gzread passes raw bytes through, and a reader may treat -5 like -1 (data at the
    # end): both fine as long as the voxels are the file's
    cases.append(_nrrd("encoding-gzip-over-raw", "compressed flag over raw data",
                       lambda b: _nrrd_bytes({"encoding": "gzip"}), "same"))
    cases.append(_nrrd("byte-skip-negative", "data offset beyond end",
                       lambda b: _nrrd_bytes({"byte skip": "-5"}), "same"))
    cases.append(_nrrd("ascii-garbage", "garbage data", lambda b: _nrrd_bytes(
        {"encoding": "ascii"}, b"abc def ghi\n" * 100)))
    cases.append(_nrrd("ascii-too-few", "truncated file", lambda b: _nrrd_bytes(
        {"encoding": "ascii"}, b"1 2 3 4 5\n")))
    cases.append(_nrrd("header-without-data", "truncated file",
                       lambda b: _nrrd_header().encode().rstrip(b"\n") + b"\n"))
    for slug, value in (("zero-vector", "(0,0,0) (0,0.9,0) (0,0,1.5)"),
                        ("nan", "(nan,0,0) (0,0.9,0) (0,0,1.5)"),
                        ("flipped", "(-0.8,0,0) (0,0.9,0) (0,0,1.5)"),
                        ("parallel", "(0.8,0,0) (0.8,0,0) (0,0,1.5)"),
                        ("huge", "(1e308,0,0) (0,1e308,0) (0,0,1e308)")):
        cases.append(_nrrd(f"space-directions-{slug}", "bad spacing/direction",
                           lambda b, v=value: _nrrd_bytes({"space directions": v}), "any"))
    cases.append(_nrrd("space-origin-nan", "bad origin",
                       lambda b: _nrrd_bytes({"space origin": "(nan,0,0)"}), "any"))
    cases.append(_nrrd("magic-future-version", "garbage magic",
                       lambda b: _nrrd_bytes(magic="NRRD9999"), "any"))
    cases.append(_nrrd("magic-garbage", "garbage magic", lambda b: _nrrd_bytes(magic="XXXX0004")))
    cases.append(_nrrd("header-line-2mb", "huge header", lambda b: _nrrd_bytes(
        extra=["# " + "a" * (2 << 20)]), "same"))

    def nan_data(bases, every=False):
        data = np.frombuffer(voxels(F32), "<f4").copy()
        data[[17] if not every else slice(None)] = np.nan
        return _nrrd_bytes({"type": "float"}, data.tobytes())

    cases.append(_nrrd("nan-voxel", "non-finite voxels", nan_data))
    cases.append(_nrrd("all-nan", "non-finite voxels", partial(nan_data, every=True)))
    bomb = {"type": "float", "sizes": "1024 1024 1024", "encoding": "gzip"}
    cases.append(_nrrd("gzip-bomb-short-stream", "gzip bomb",
                       lambda b: _nrrd_bytes(bomb, gzip_bytes(bytes(1 << 20)))))
    cases.append(_nrrd("gzip-bomb-256mb", "gzip bomb",
                       lambda b: _nrrd_bytes(bomb, bomb_stream(b"", 256 << 20, 31)),
                       sample=False, timeout=60.0))
    cases.extend(common_inputs("nrrd", "vol", ".nrrd"))
    return cases


# ============================================================================ NHDR (detached)
def _nhdr(slug, fault, build_data, header_changes, expect="refuse", data_name="vol.raw",
          extra=()):
    """``build_data(folder) -> None`` writes whatever data files the case needs."""
    def build(folder, bases):
        build_data(folder)
        changes = {"data file": data_name.format(folder=folder.name), **header_changes}
        return write(folder / "vol.nhdr", _nrrd_header(changes, extra=extra))

    return Input(f"nhdr/{slug}", "nhdr", fault, build, expect,
                 reference=I16 if expect == "same" else None)


def _absolute_outside(folder, bases):
    absolute = outside_folder(folder) / "vol.raw"
    write(absolute, voxels(I16))
    return write(folder / "vol.nhdr", _nrrd_header({"data file": str(absolute)}))


def _nhdr_inputs() -> list[Input]:
    good = lambda f: write(f / "vol.raw", voxels(I16))  # noqa: E731
    n = len(voxels(I16))

    def slices_outside(folder):
        for k in range(NZ):
            write(outside_folder(folder) / f"slice{k:02d}.raw",
                  voxels(I16)[k * NX * NY * 2:(k + 1) * NX * NY * 2])

    def absolute(folder):
        write(outside_folder(folder) / "vol.raw", voxels(I16))

    cases = [
        _nhdr("valid-raw", "control", good, {}, "same"),
        _nhdr("valid-gzip", "control", lambda f: write(f / "vol.raw.gz", gzip_bytes(voxels(I16))),
              {"encoding": "gzip"}, "same", data_name="vol.raw.gz"),
        _nhdr("raw-with-trailing-bytes", "control",
              lambda f: write(f / "vol.raw", voxels(I16) + b"extra"), {}, "same"),
        _nhdr("data-file-missing", "missing data file", lambda f: None, {}),
        Input("nhdr/data-file-absolute-outside", "nhdr", "data file outside folder",
              _absolute_outside, "refuse"),
        _nhdr("data-file-etc-hostname", "data file outside folder", lambda f: None, {},
              data_name="/etc/hostname"),
        _nhdr("data-file-dotdot", "data file outside folder", absolute, {},
              data_name="../{folder}-outside/vol.raw"),
        _nhdr("data-file-list-outside", "data file outside folder", slices_outside, {},
              data_name="LIST",
              extra=[f"../{{folder}}-outside/slice{k:02d}.raw" for k in range(NZ)]),
        _nhdr("data-file-pattern-outside", "data file outside folder", slices_outside, {},
              data_name=f"../{{folder}}-outside/slice%02d.raw 0 {NZ - 1} 1 2"),
        _nhdr("data-file-is-folder", "data file is a folder", lambda f: (f / "vol.raw").mkdir(),
              {}),
        _nhdr("data-file-is-header", "data file is the header", lambda f: None, {},
              data_name="vol.nhdr"),
        _nhdr("encoding-gzip-over-raw", "compressed flag over raw data", good,
              {"encoding": "gzip"}, "same"),
        _nhdr("sizes-20000-cubed", "huge dims", good, {"sizes": "20000 20000 20000"}),
        _nhdr("gzip-bomb-short-stream", "gzip bomb",
              lambda f: write(f / "vol.raw.gz", gzip_bytes(bytes(1 << 20))),
              {"type": "float", "sizes": "1024 1024 1024", "encoding": "gzip"},
              data_name="vol.raw.gz"),
    ]
    for cut in (0, 1, n // 2, n - 1):
        cases.append(_nhdr(f"raw-truncated-at-{cut}", "truncated data file",
                           lambda f, c=cut: write(f / "vol.raw", voxels(I16)[:c]), {}))
    header = _nrrd_header({"data file": "vol.raw"}).encode()
    for cut in (5, len(header) // 2, len(header) - 2):
        def build(folder, bases, cut=cut):
            good(folder)
            return write(folder / "vol.nhdr", header[:cut])

        cases.append(Input(f"nhdr/header-truncated-at-{cut}", "nhdr", "truncated file", build,
                           "refuse"))
    cases.extend(common_inputs("nhdr", "vol", ".nhdr"))
    return [format_extra(c) for c in cases]


def inputs() -> list[Input]:
    return [*_nrrd_inputs(), *_nhdr_inputs()]
