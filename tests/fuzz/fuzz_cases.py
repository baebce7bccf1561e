"""Hostile-input cases: what a case is, the shared base artefacts, and the fast sample.

A case is one hostile input (files written by a plain builder function into the
case's own folder, deterministic from a seed) run through one entry point
(``load_volume``, the napari reader, ``generate`` on the command line, ...).
What counts as a right answer is the case's ``expect``:

* ``"refuse"``: only a clean refusal is right (a truncated file, a DICOM series
  with a gap, a header whose data file lies outside its folder); a result is a
  failure, "accepted silently".
* ``"same"``: the input still describes the base volume exactly, so a result must
  equal it (voxels and geometry); a clean refusal is also allowed.
* ``"any"``: a clean refusal, or a sane result (3D, finite voxels, positive finite
  spacing, a generator with finite weights).

The generator modules (``fuzz_volumes`` with ``fuzz_nifti``, ``fuzz_nrrd`` and
``fuzz_metaimage``; ``fuzz_dicom``; ``fuzz_checkpoints`` with ``fuzz_checkpoint_files``;
``fuzz_configs``) list :class:`Input` records; :func:`expand` turns each into one
:class:`Case` per entry point. Nothing is written until a case is built, so
listing every case is cheap and the fast sample only builds what it runs.
"""

from __future__ import annotations

import functools
import json
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EXPECTS = ("refuse", "same", "any")
#: Volume entry points: the core reader and the napari reader (get_reader, then call it).
VOLUME_ENTRIES = ("load_volume", "reader")
#: Checkpoint entry points: ``napari-medgan generate CKPT`` and ``load_generator(CKPT)``.
CHECKPOINT_ENTRIES = ("cli_generate", "load_generator")

#: Base volume geometry, ITK (x, y, z) LPS; the array is (z, y, x) and not cubic so that a
#: transposition cannot read back equal.
SHAPE_ZYX = (14, 15, 16)
SPACING = (0.8, 0.9, 1.5)
ORIGIN = (-10.5, 20.25, 30.0)

#: The tiny training run every checkpoint case starts from (16^3 dcgan3d, seconds on a CPU).
TINY_TRAIN = ["--data", "phantom", "--phantom-count", "2", "--phantom-size", "16",
              "--patch-size", "16", "--channels", "8", "--latent-dim", "16", "--batch-size", "2",
              "--device", "cpu", "--checkpoint-every", "2", "--preview-every", "2",
              "--log-every", "1", "--memory-check", "off", "--steps", "2"]


@dataclass(frozen=True)
class Input:
    """One hostile input and what a right answer to it is.

    ``build(folder, bases)`` writes the input into ``folder`` (empty, created) and returns
    the path handed to the entry points. ``field`` must appear in a refusal's message
    (checkpoint and config fields). ``reference`` names the base volume an ``expect="same"``
    result must equal. ``sample`` marks inputs too slow for the fast sample.
    """

    name: str
    group: str
    fault: str
    build: Callable[[Path, "Bases"], Path]
    expect: str = "any"
    entries: tuple[str, ...] = VOLUME_ENTRIES
    field: str | None = None
    reference: str | None = None
    timeout: float = 30.0
    sample: bool = True
    #: Extra checks handed to the worker, e.g. ``{"forbidden_spacing": 7.25}``: an output with
    #: that voxel size came from a checkpoint outside the folder the entry was given.
    checks: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.expect not in EXPECTS:
            raise ValueError(f"{self.name}: expect must be one of {EXPECTS}, got {self.expect!r}")
        if self.expect == "same" and self.reference is None:
            raise ValueError(f"{self.name}: expect='same' needs a reference volume")
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._+-]*", self.name):
            raise ValueError(f"{self.name}: case names are 'group/slug' in lower case")


@dataclass(frozen=True)
class Case:
    """One input run through one entry point."""

    input: Input
    entry: str

    @property
    def name(self) -> str:
        return f"{self.input.name}@{self.entry}"

    @property
    def group(self) -> str:
        return self.input.group

    @property
    def fault(self) -> str:
        return self.input.fault


def expand(inputs: list[Input]) -> list[Case]:
    """One case per (input, entry); names must be unique."""
    cases = [Case(inp, entry) for inp in inputs for entry in inp.entries]
    seen: set[str] = set()
    for case in cases:
        if case.name in seen:
            raise ValueError(f"duplicate fuzz case {case.name}")
        seen.add(case.name)
    return cases


def all_inputs() -> list[Input]:
    """Every input of every generator module."""
    import fuzz_checkpoints
    import fuzz_configs
    import fuzz_dicom
    import fuzz_volumes

    return [*fuzz_volumes.inputs(), *fuzz_dicom.inputs(), *fuzz_checkpoints.inputs(),
            *fuzz_configs.inputs()]


def all_cases() -> list[Case]:
    return expand(all_inputs())


def sample_cases(cases: list[Case], size: int = 40, seed: int = 0) -> list[Case]:
    """A deterministic stratified sample: round robin over (group, entry) strata, and within
    a stratum over its fault classes, so every format, entry point and as many fault
    classes as fit are covered. Inputs marked ``sample=False`` are left out."""
    rng = random.Random(seed)
    strata: dict[tuple[str, str], dict[str, list[Case]]] = {}
    for case in cases:
        if case.input.sample:
            strata.setdefault((case.group, case.entry), {}).setdefault(case.fault, []).append(case)
    queues = {}
    for key in sorted(strata):
        faults = sorted(strata[key])
        rng.shuffle(faults)
        per_fault = {f: rng.sample(strata[key][f], len(strata[key][f])) for f in faults}
        order = []
        while any(per_fault.values()):
            for f in faults:
                if per_fault[f]:
                    order.append(per_fault[f].pop())
        queues[key] = order
    chosen: list[Case] = []
    while len(chosen) < size and any(queues.values()):
        for key in sorted(queues):
            if queues[key] and len(chosen) < size:
                chosen.append(queues[key].pop(0))
    return chosen


# --------------------------------------------------------------------------- base artefacts
def base_array(dtype: str) -> np.ndarray:
    """The (z, y, x) base voxels: int16 in [-1000, 1000] (never a label map) or float32."""
    rng = np.random.default_rng(1234)
    if dtype == "int16":
        return rng.integers(-1000, 1000, size=SHAPE_ZYX).astype(np.int16)
    return rng.normal(100.0, 30.0, size=SHAPE_ZYX).astype(np.float32)


def base_volume(dtype: str = "int16"):
    from napari_medgan.io import Volume

    return Volume(base_array(dtype), spacing=SPACING, origin=ORIGIN, direction=np.eye(3),
                  source=f"base-{dtype}")


class Bases:
    """Artefacts shared by many cases, made once under ``root/_bases`` when first asked for.

    ``checkpoint_run`` is the run folder of a tiny trained dcgan3d (given, or trained here in
    a subprocess with :data:`TINY_TRAIN`).
    """

    def __init__(self, root: Path, checkpoint_run: Path | None = None) -> None:
        self.root = Path(root)
        self.dir = self.root / "_bases"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._run = Path(checkpoint_run) if checkpoint_run else None

    def reference(self, key: str) -> Path:
        """``.npz`` (array, spacing, origin, direction) of base volume ``key`` (a dtype)."""
        path = self.dir / f"reference-{key}.npz"
        if not path.exists():
            vol = base_volume(key)
            np.savez(path, array=vol.array, spacing=vol.spacing, origin=vol.origin,
                     direction=vol.direction)
        return path

    @functools.cache
    def file(self, name: str) -> bytes:
        """Bytes of base volume file ``name`` (``int16.nii``, ``float32.nrrd`` ...),
        written with the package's own writer."""
        from napari_medgan.io import save_volume

        dtype, suffix = name.split(".", 1)
        path = self.dir / f"written-{name}"
        save_volume(base_volume(dtype), path)
        return path.read_bytes()

    @functools.cache
    def dicom_series(self) -> Path:
        """A valid 14-slice int16 CT series written with ``save_dicom_series``."""
        from napari_medgan.io import save_dicom_series

        folder = self.dir / "dicom"
        save_dicom_series(base_volume("int16"), folder, modality="CT")
        return folder

    @property
    def checkpoint_run(self) -> Path:
        if self._run is None:
            self._run = train_tiny_run(self.dir / "tiny-run")
        return self._run


def train_tiny_run(out: Path) -> Path:
    """Train the tiny dcgan3d run in a subprocess (seconds); returns its run folder."""
    if (out / "checkpoints" / "latest.json").exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    code = ("import sys; from napari_medgan.cli import main; "
            f"sys.exit(main(['train', *{TINY_TRAIN!r}, '--out', {str(out)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"tiny training run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return out


def build_case_input(inp: Input, root: Path, bases: Bases) -> Path:
    """Write ``inp`` into its own fresh folder under ``root``; returns the entry path."""
    folder = root / inp.name.replace("/", "__")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return inp.build(folder, bases)


def remove_case_input(inp: Input, root: Path) -> None:
    """Delete an input's folder (and the ``-outside`` sibling some inputs write)."""
    folder = root / inp.name.replace("/", "__")
    for path in (folder, folder.with_name(f"{folder.name}-outside")):
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path, ignore_errors=True)


def case_spec(case: Case, target: Path, root: Path, bases: Bases) -> dict:
    """The JSON record the worker runs: entry, paths, what to compare against."""
    inp = case.input
    folder = root / inp.name.replace("/", "__")
    names = sorted({target.name, folder.name})
    spec = {"name": case.name, "entry": case.entry, "path": str(target), "folder": str(folder),
            "names": names, "field": inp.field, "expect": inp.expect,
            "out": str(root / "_out" / case.name.replace("/", "__").replace("@", "--")),
            "reference": str(bases.reference(inp.reference)) if inp.reference else None,
            **dict(inp.checks)}
    return json.loads(json.dumps(spec))


# --------------------------------------------------------------------------- small helpers
def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def flip_bytes(data: bytes, seed: int, start: int, stop: int, count: int) -> bytes:
    """``count`` random bytes in ``[start, stop)`` replaced by other random values."""
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(count):
        i = rng.randrange(start, min(stop, len(out)))
        out[i] = (out[i] + rng.randrange(1, 256)) % 256
    return bytes(out)


@dataclass
class Outcome:
    """Classified result of one case (see ``fuzz_runner.classify``)."""

    name: str
    group: str
    entry: str
    fault: str
    status: str  # ok | refused | failed
    reason: str = ""
    message: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
