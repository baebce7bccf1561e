"""Hostile volume files: shared pieces, and every volume input.

The formats live in ``fuzz_nifti`` (.nii, .nii.gz), ``fuzz_nrrd`` (.nrrd, .nhdr + raw) and
``fuzz_metaimage`` (.mha, .mhd + raw). Each input starts from the base volume
(:func:`fuzz_cases.base_volume`, written with the package's writer or, where a header field
must be edited, with a hand-written header over the same voxels) and derives one fault:
truncation, byte flips, a lying header field, a compressed-stream bomb, a data file outside
the header's folder, NaN voxels, an empty file, a folder named like a volume.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from fuzz_cases import SHAPE_ZYX, Input, write

NZ, NY, NX = SHAPE_ZYX
I16 = "int16"
F32 = "float32"


def voxels(dtype: str, byteorder: str = "<") -> bytes:
    from fuzz_cases import base_array

    return base_array(dtype).astype(np.dtype(dtype).newbyteorder(byteorder)).tobytes()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def bomb_stream(prefix: bytes, zeros: int, wbits: int) -> bytes:
    """``prefix`` then ``zeros`` zero bytes, deflated in chunks (a few hundred KB out)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, wbits)
    parts = [comp.compress(prefix)]
    chunk = bytes(1 << 20)
    for _ in range(zeros >> 20):
        parts.append(comp.compress(chunk))
    parts.append(comp.flush())
    return b"".join(parts)


def random_bytes(seed: int, n: int = 4096) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def common_inputs(group: str, stem: str, suffix: str) -> list[Input]:
    """Empty file, text, random bytes, a folder named like a volume: refused by everyone."""
    def empty(folder, bases):
        return write(folder / f"{stem}{suffix}", b"")

    def text(folder, bases):
        return write(folder / f"{stem}{suffix}", "this is not a volume\n" * 40)

    def noise(folder, bases):
        return write(folder / f"{stem}{suffix}", random_bytes(len(group)))

    def directory(folder, bases):
        path = folder / f"{stem}{suffix}"
        path.mkdir()
        write(path / "inside.txt", "a folder, not a volume\n")
        return path

    return [
        Input(f"{group}/empty-file", group, "empty file", empty, "refuse"),
        Input(f"{group}/text-file", group, "text file", text, "refuse"),
        Input(f"{group}/random-bytes", group, "random bytes", noise, "refuse"),
        Input(f"{group}/folder-named-like-volume", group, "folder named like a volume",
              directory, "refuse"),
    ]


def outside_folder(folder: Path) -> Path:
    """A sibling folder outside the case folder (where hostile headers point)."""
    path = folder.parent / f"{folder.name}-outside"
    path.mkdir(exist_ok=True)
    return path


def format_extra(inp: Input) -> Input:
    original = inp.build

    def build(folder, bases):
        path = original(folder, bases)
        if path.is_file() and path.suffix in (".nhdr", ".mhd"):
            text = path.read_bytes().replace(b"{folder}", folder.name.encode())
            path.write_bytes(text)
        return path

    return Input(inp.name, inp.group, inp.fault, build, inp.expect, inp.entries, inp.field,
                 inp.reference, inp.timeout, inp.sample, inp.checks)


def inputs() -> list[Input]:
    import fuzz_metaimage
    import fuzz_nifti
    import fuzz_nrrd

    return [*fuzz_nifti.inputs(), *fuzz_nrrd.inputs(), *fuzz_metaimage.inputs()]
