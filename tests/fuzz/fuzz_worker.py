"""Fuzz worker: runs hostile-input cases one after another under a memory limit.

Started by ``fuzz_runner.Worker`` as ``python fuzz_worker.py``. It sets
``RLIMIT_AS`` (``FUZZ_MEMORY_LIMIT`` bytes) before importing anything heavy, imports
the package once, prints ``{"ready": true}``, then reads one JSON case per line on stdin
and answers one JSON line per case on stdout. Everything else the code under test
prints (Python or C level) goes to stderr, which the runner keeps in a log file.

The worker does not classify: it reports what happened (returned / raised / declined /
CLI exit status and stderr) and what is wrong with a returned result (``problems``).
Self-contained on purpose: it imports nothing from the test folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import resource
import sys
import time
import traceback
import typing
import warnings
from pathlib import Path

MARKER = "UNPICKLED"


def _limit_memory() -> None:
    limit = int(os.environ.get("FUZZ_MEMORY_LIMIT", str(6 << 30)))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _status_mb(key: str) -> float | None:
    from napari_medgan.training.memory import status_bytes

    found = status_bytes(key)
    return None if found is None else found / 2**20


def _reset_peak() -> bool:
    """Reset the kernel's resident-memory high-water mark (VmHWM), so a case's peak is its own."""
    from napari_medgan.training.memory import reset_peak_rss

    return reset_peak_rss()


def _maxrss_mb() -> float:
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _reset_warnings() -> None:
    """The filters of a fresh ``python`` process, and every warning shown again per case."""
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                     ResourceWarning):
        warnings.filterwarnings("ignore", category=category)


class Declined(Exception):
    """The napari reader returned None: it does not claim the path."""


# --------------------------------------------------------------------------- result checks
def _check_array(arr, what: str) -> list[str]:
    import numpy as np

    arr = np.asarray(arr)
    if arr.ndim != 3:
        return [f"{what} is {arr.ndim}D, shape {arr.shape}"]
    if arr.dtype.kind not in "biuf":
        return [f"{what} has dtype {arr.dtype}"]
    if 0 in arr.shape:
        return [f"{what} is empty, shape {arr.shape}"]
    if arr.dtype.kind == "f":
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            return [f"{what} has {bad} non-finite voxels of {arr.size}"]
    return []


def _check_geometry(spacing, origin, direction) -> list[str]:
    import numpy as np

    problems = []
    sp = np.asarray(spacing, dtype=float).reshape(-1)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        problems.append(f"spacing {sp.tolist()} is not 3 positive finite numbers")
    if not np.all(np.isfinite(np.asarray(origin, dtype=float))):
        problems.append(f"origin {np.asarray(origin).tolist()} is not finite")
    d = np.asarray(direction, dtype=float)
    if d.shape != (3, 3) or not np.all(np.isfinite(d)) or abs(np.linalg.det(d)) < 1e-6:
        problems.append(f"direction {d.tolist()} is not a finite invertible 3x3 matrix")
    return problems


def _compare(arr, spacing, origin, direction, reference: str | None) -> list[str]:
    """Differences from the base volume an ``expect="same"`` case must give back."""
    import numpy as np

    if not reference:
        return []
    ref = np.load(reference)
    arr = np.asarray(arr)
    if arr.shape != ref["array"].shape:
        return [f"wrong voxels: shape {arr.shape}, the file holds {ref['array'].shape}"]
    diff = np.abs(arr.astype(np.float64) - ref["array"].astype(np.float64))
    problems = []
    if not np.all(diff <= 1e-6 * (1 + np.abs(ref["array"]))):
        problems.append(f"wrong voxels: {int(np.count_nonzero(diff > 1e-6))} of {arr.size} "
                        f"differ from the file's (max |diff| {float(np.nanmax(diff)):.4g})")
    for name, got, want in (("spacing", spacing, ref["spacing"]), ("origin", origin, ref["origin"]),
                            ("direction", direction, ref["direction"])):
        got = np.asarray(got, dtype=float)
        if got.shape != want.shape or not np.allclose(got, want, atol=1e-4):
            problems.append(f"wrong geometry: {name} {got.tolist()}, the file says "
                            f"{want.tolist()}")
    return problems


def _check_volume(vol, spec) -> list[str]:
    from napari_medgan.io import Volume

    if not isinstance(vol, Volume):
        return [f"returned a {type(vol).__name__}, not a Volume"]
    problems = _check_array(vol.array, "volume") + _check_geometry(vol.spacing, vol.origin,
                                                                   vol.direction)
    return problems or _compare(vol.array, vol.spacing, vol.origin, vol.direction,
                                spec.get("reference"))


# --------------------------------------------------------------------------- entries
def _describe(array, spacing, origin) -> str:
    import numpy as np

    array = np.asarray(array)
    return (f"shape {tuple(array.shape)} {array.dtype}, spacing "
            f"{np.round(np.asarray(spacing, float), 4).tolist()}, origin "
            f"{np.round(np.asarray(origin, float), 4).tolist()}")


def entry_load_volume(spec, res) -> list[str]:
    from napari_medgan.io import load_volume

    vol = load_volume(spec["path"])
    res["result"] = _describe(vol.array, vol.spacing, vol.origin)
    return _check_volume(vol, spec)


def entry_reader(spec, res) -> list[str]:
    import numpy as np

    from napari_medgan._reader import napari_get_reader

    reader = napari_get_reader(spec["path"])
    if reader is None:
        raise Declined()
    layers = reader(spec["path"])
    if not isinstance(layers, list) or not layers:
        return [f"reader returned {layers!r:.80}, not a list of layers"]
    problems = []
    for data, kwargs, _kind in layers:
        problems += _check_array(data, "layer data")
        scale = np.asarray(kwargs.get("scale", (1, 1, 1)), dtype=float)
        translate = np.asarray(kwargs.get("translate", (0, 0, 0)), dtype=float)
        affine = np.asarray(kwargs.get("affine", np.eye(4)), dtype=float)
        problems += _check_geometry(scale[::-1], translate, affine[:3, :3])
    if problems:
        return problems
    data, kwargs, _ = layers[0]
    res["result"] = _describe(data, np.asarray(kwargs["scale"])[::-1],
                              np.asarray(kwargs["translate"])[::-1])
    return _compare(data, np.asarray(kwargs["scale"])[::-1], np.asarray(kwargs["translate"])[::-1],
                    np.asarray(kwargs.get("affine", np.eye(4)))[:3, :3], spec.get("reference"))


def _run_cli(argv: list[str], res: dict) -> int:
    from napari_medgan.cli import main

    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse
                rc = exc.code if isinstance(exc.code, int) else 1
    finally:
        text = err.getvalue()
        res["stderr"] = text if len(text) <= 2_000_000 else text[:2_000_000]
    res["kind"] = "cli"
    res["rc"] = rc
    return rc


def _check_outputs(folder: Path, forbidden_spacing: float | None = None) -> list[str]:
    import nibabel as nib
    import numpy as np

    files = sorted(folder.glob("*.nii*")) if folder.is_dir() else []
    if not files:
        return [f"exit status 0 but no volume written in {folder}"]
    problems = []
    for path in files:
        img = nib.load(str(path))
        problems += _check_array(np.asanyarray(img.dataobj), path.name)
        zooms = img.header.get_zooms()[:3]
        problems += [p.replace("spacing", f"{path.name}: spacing")
                     for p in _check_geometry(zooms, img.affine[:3, 3], np.eye(3))]
        if not np.all(np.isfinite(img.affine)):
            problems.append(f"{path.name}: affine is not finite")
        if forbidden_spacing and np.allclose(zooms, forbidden_spacing, atol=1e-3):
            problems.append(f"{path.name}: generated by the checkpoint outside the folder it was "
                            f"given (its marked spacing {forbidden_spacing} mm)")
    return problems


def entry_cli_generate(spec, res) -> list[str]:
    out = Path(spec["out"])
    rc = _run_cli(["generate", spec["path"], "--n", "1", "--seed", "0", "--out", str(out),
                   "--device", "cpu"], res)
    res["result"] = "exit status 0 and a synthetic volume"
    return _check_outputs(out, spec.get("forbidden_spacing")) if rc == 0 else []


def entry_load_generator(spec, res) -> list[str]:
    import torch

    from napari_medgan.training.inference import generate, load_generator

    loaded = load_generator(spec["path"], device="cpu")
    res["result"] = f"a {loaded.model.name}/{loaded.model.task} generator from {loaded.path}"
    problems = []
    for name, tensor in [*loaded.generator.named_parameters(), *loaded.generator.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            problems.append(f"generator weight {name} is not finite")
            break
    folder = Path(spec["folder"]).resolve()
    where = Path(loaded.path).resolve()
    if folder != where and folder not in where.parents:
        problems.append(f"loaded the checkpoint {where}, outside the folder it was given")
    try:
        images, _ = generate(loaded, 1, seed=0)
    except Exception as exc:  # noqa: BLE001 - a loaded model that cannot sample is the finding
        problems.append(f"the loaded model cannot generate: {type(exc).__name__}: "
                        f"{str(exc)[:200]}")
    else:
        problems += _check_volume(images[0], {})
    return problems


def _type_problem(value, hint, where: str) -> str | None:
    import math
    import types

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(hint)):
            return None
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        inner = [a for a in typing.get_args(hint) if a is not Ellipsis]
        ok = isinstance(value, tuple) and all(
            _type_problem(v, inner[0], where) is None for v in value)
        return None if ok else f"{where} holds {value!r:.60} ({type(value).__name__}), declared {hint}"
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            return f"{where} holds {value!r}, not finite"
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    return None if ok else (f"{where} holds {value!r:.60} ({type(value).__name__}), declared "
                            f"{getattr(hint, '__name__', hint)}")


def _check_config(run) -> list[str]:
    problems = []
    for section in ("data", "model", "train"):
        obj = getattr(run, section)
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            problem = _type_problem(getattr(obj, f.name), hints[f.name], f"{section}.{f.name}")
            if problem:
                problems.append(f"accepted a wrong type: {problem}")
    for name, hint in (("out", str), ("init", typing.Optional[str]), ("resume", bool)):
        problem = _type_problem(getattr(run, name), hint, name)
        if problem:
            problems.append(f"accepted a wrong type: {problem}")
    return problems


def entry_train_config(spec, res) -> list[str]:
    """``napari-medgan train --config CFG --resume --out RUN`` up to the validated config: the
    real ``main`` (its parser, its error handling) with ``train`` stopped before the Trainer."""
    import napari_medgan.cli as cli

    built = {}

    def read_config_only(args):
        built["run"] = cli.build_run_config(args)
        return 0

    saved = cli.COMMANDS["train"]
    cli.COMMANDS["train"] = read_config_only
    try:
        rc = _run_cli(["train", "--config", spec["path"], "--resume", "--out", spec["folder"]],
                      res)
    finally:
        cli.COMMANDS["train"] = saved
    return _check_config(built["run"]) if rc == 0 else []


def entry_cli_train_resume(spec, res) -> list[str]:
    res["cli"] = "train"
    _run_cli(["train", "--config", spec["path"], "--resume", "--out", spec["folder"]], res)
    return []


ENTRIES = {"load_volume": entry_load_volume, "reader": entry_reader,
           "cli_generate": entry_cli_generate, "load_generator": entry_load_generator,
           "train_config": entry_train_config, "cli_train_resume": entry_cli_train_resume}


# --------------------------------------------------------------------------- loop
def run_case(spec: dict) -> dict:
    _reset_warnings()
    marker = Path(spec["folder"]) / MARKER
    marker_before = marker.exists()
    res: dict = {"name": spec["name"], "kind": "returned", "problems": [], "violations": []}
    _reset_peak()
    rss0 = _status_mb("VmRSS") or _maxrss_mb()
    t0 = time.perf_counter()
    try:
        res["problems"] = ENTRIES[spec["entry"]](spec, res)
    except Declined:
        res["kind"] = "declined"
    except BaseException as exc:  # noqa: BLE001 - every escape is reported, never swallowed
        if isinstance(exc, KeyboardInterrupt):
            raise
        res.update(kind="raised", exc_type=type(exc).__name__,
                   exc_mro=[c.__name__ for c in type(exc).__mro__],
                   message=str(exc)[:4000],
                   traceback="".join(traceback.format_exception(exc))[-3000:])
    res["seconds"] = round(time.perf_counter() - t0, 3)
    res["rss_growth_mb"] = round(_maxrss_mb() - rss0, 1)
    res["rss_mb"] = round(_status_mb("VmRSS") or _maxrss_mb(), 1)
    if marker.exists() and not marker_before:
        res["violations"].append("a pickle was unpickled: its payload created UNPICKLED")
    return res


def main() -> None:
    _limit_memory()
    results = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints, C-level output: into the worker log, never into the results
    import numpy  # noqa: F401
    import torch

    torch.set_num_threads(1)
    import napari_medgan._reader  # noqa: F401
    import napari_medgan.cli  # noqa: F401
    import napari_medgan.training.inference  # noqa: F401
    import nibabel  # noqa: F401
    import SimpleITK  # noqa: F401

    results.write(json.dumps({"ready": True, "rss_mb": _maxrss_mb()}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        print(f"=== case {spec['name']}", file=sys.stderr, flush=True)
        results.write(json.dumps(run_case(spec), default=str) + "\n")


if __name__ == "__main__":
    main()
