"""Hostile checkpoint files and run folders: ``state.json`` damaged, missing, a folder or a
symlink; ``weights.safetensors`` truncated, NaN, of the wrong shape or dtype, with a lying
header; pickles (never to be unpickled: the payload would create ``UNPICKLED``); run folders
whose ``latest.json`` points elsewhere (a valid checkpoint planted outside, marked by its
spacing) or that hold no usable checkpoint."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

from fuzz_cases import CHECKPOINT_ENTRIES, Input, write
from fuzz_checkpoints import (GROUP, MARKER, RUN_GROUP, STEP, copy_checkpoint, ema_keys,
                              fill_tensors, fix_weights_bytes, load_doc, rewrite_tensors,
                              save_doc)


def _files_case(slug, fault, mutate, expect="refuse", field=None, group=GROUP):
    """``mutate(folder)`` after copying the base checkpoint into ``folder``."""
    def build(folder, bases):
        copy_checkpoint(folder, bases)
        mutate(folder)
        return folder

    return Input(f"{group}/{slug}", group, fault, build, expect, entries=CHECKPOINT_ENTRIES,
                 field=field)


def _safetensors_header(folder: Path) -> tuple[dict, bytes]:
    data = (folder / "weights.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), data[8 + n:]


def _write_safetensors(folder: Path, header: dict, body: bytes, fix: bool = True) -> None:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    (folder / "weights.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + body)
    if fix:
        fix_weights_bytes(folder)


def _first_ema(header: dict) -> str:
    return sorted(k for k in header if k.startswith("ema.") and header[k]["dtype"] == "F32")[0]


class _Payload:
    """Unpickling this creates the marker file: proof that something unpickled it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_pickle(folder: Path) -> bytes:
    return pickle.dumps({"generator": _Payload(str(folder / MARKER))}, protocol=2)


# --------------------------------------------------------------------------- files
def _file_inputs() -> list[Input]:
    cases = []
    add = cases.append

    def truncate_state(n):
        def mutate(folder):
            data = (folder / "state.json").read_bytes()
            (folder / "state.json").write_bytes(data[:n] if n >= 0 else data[:len(data) // 2])
        return mutate

    for slug, n in (("empty", 0), ("1-byte", 1), ("half", -1)):
        add(_files_case(f"state-json-truncated-{slug}", "state.json damaged", truncate_state(n)))
    add(_files_case("state-json-not-utf8", "state.json damaged",
                    lambda f: (f / "state.json").write_bytes(b"\xff\xfe{\x00\x80garbage")))
    add(_files_case("state-json-deeply-nested", "state.json damaged",
                    lambda f: (f / "state.json").write_text("[" * 200000 + "]" * 200000)))
    add(_files_case("state-json-top-level-list", "state.json damaged",
                    lambda f: (f / "state.json").write_text("[1, 2, 3]")))

    def inf_spacing(folder):
        text = (folder / "state.json").read_text()
        doc = json.loads(text)
        doc["state"]["geometry"]["spacing"] = ["@INF@", 1, 1]
        (folder / "state.json").write_text(json.dumps(doc).replace('"@INF@"', "1e999"))

    add(_files_case("state-json-1e999-spacing", "geometry field", inf_spacing, field="spacing"))
    add(_files_case("state-json-is-folder", "missing or odd files",
                    lambda f: ((f / "state.json").unlink(), (f / "state.json").mkdir())))
    add(_files_case("state-json-missing", "missing or odd files",
                    lambda f: (f / "state.json").unlink()))
    add(_files_case("state-json-symlink-etc-passwd", "missing or odd files",
                    lambda f: ((f / "state.json").unlink(),
                               (f / "state.json").symlink_to("/etc/passwd"))))
    add(_files_case("weights-missing", "missing or odd files",
                    lambda f: (f / "weights.safetensors").unlink()))
    add(_files_case("weights-is-folder", "missing or odd files",
                    lambda f: ((f / "weights.safetensors").unlink(),
                               (f / "weights.safetensors").mkdir())))

    # -- truncated weights: weights_bytes updated to match, so only the parser can tell
    def truncate_weights(n, fix=True):
        def mutate(folder):
            path = folder / "weights.safetensors"
            data = path.read_bytes()
            if n == "header-end":
                cut = 8 + int.from_bytes(data[:8], "little")
            elif n == "header-end+100":
                cut = 8 + int.from_bytes(data[:8], "little") + 100
            elif n == "half":
                cut = len(data) // 2
            elif n == "minus-1":
                cut = len(data) - 1
            else:
                cut = int(n)
            path.write_bytes(data[:cut])
            if fix:
                fix_weights_bytes(folder)
        return mutate

    for n in ("0", "4", "8", "9", "100", "header-end", "header-end+100", "half", "minus-1"):
        add(_files_case(f"weights-truncated-{n}-size-updated", "truncated weights",
                        truncate_weights(n)))
    for n in ("half", "minus-1"):
        add(_files_case(f"weights-truncated-{n}-size-recorded", "truncated weights",
                        truncate_weights(n, fix=False)))

    # -- tensor values, shapes, dtypes
    for slug, change, expect in (
            ("ema-nan", fill_tensors("ema.", float("nan")), "refuse"),
            ("ema-inf", fill_tensors("ema.", float("inf")), "refuse"),
            ("ema-one-tensor-nan", fill_tensors("ema.", float("nan"), first_only=True), "refuse"),
            ("generator-nan-ema-ok", fill_tensors("generator.", float("nan")), "any"),
            ("discriminator-nan", fill_tensors("discriminator.", float("nan")), "any")):
        add(_files_case(f"weights-{slug}", "non-finite weights",
                        lambda f, c=change: rewrite_tensors(f, c), expect))

    def retype(dtype_name):
        def change(tensors):
            import torch

            for key in ema_keys(tensors):
                tensors[key] = tensors[key].to(getattr(torch, dtype_name))
        return change

    for dtype, expect in (("float64", "any"), ("float16", "any"), ("int64", "refuse"),
                          ("bool", "refuse")):
        add(_files_case(f"weights-ema-{dtype}", "wrong weight dtype",
                        lambda f, c=retype(dtype): rewrite_tensors(f, c), expect))

    def reshape(kind):
        def change(tensors):
            import torch

            key = ema_keys(tensors)[0]
            if kind == "extra-dim":
                tensors[key] = tensors[key].unsqueeze(0).contiguous()
            elif kind == "bigger":
                tensors[key] = torch.zeros([s + 1 for s in tensors[key].shape])
            elif kind == "missing":
                del tensors[key]
            else:
                tensors["ema.bogus_tensor"] = torch.zeros(3)
        return change

    for kind, expect in (("extra-dim", "refuse"), ("bigger", "refuse"), ("missing", "refuse"),
                         ("unknown-extra", "any")):
        add(_files_case(f"weights-ema-tensor-{kind}", "wrong weight shape",
                        lambda f, c=reshape(kind): rewrite_tensors(f, c), expect))

    # -- a lying safetensors header (the 8-byte length, offsets, shape, dtype)
    def header_length(folder):
        data = (folder / "weights.safetensors").read_bytes()
        (folder / "weights.safetensors").write_bytes((1 << 62).to_bytes(8, "little") + data[8:])

    add(_files_case("weights-header-length-huge", "lying safetensors header", header_length))

    def edit_header(kind):
        def mutate(folder):
            header, body = _safetensors_header(folder)
            key = _first_ema(header)
            if kind == "offsets-beyond-end":
                header[key]["data_offsets"] = [0, len(body) * 10]
            elif kind == "shape-huge":
                header[key]["shape"] = [100000, 100000, 100000]
            elif kind == "dtype-unknown":
                header[key]["dtype"] = "F99"
            elif kind == "garbage-json":
                raw = b"{not json" + b" " * 7
                (folder / "weights.safetensors").write_bytes(
                    len(raw).to_bytes(8, "little") + raw + body)
                fix_weights_bytes(folder)
                return
            _write_safetensors(folder, header, body)
        return mutate

    for kind in ("offsets-beyond-end", "shape-huge", "dtype-unknown", "garbage-json"):
        add(_files_case(f"weights-header-{kind}", "lying safetensors header", edit_header(kind)))

    # -- pickles: refused by name or content, never unpickled
    def pickle_weights(folder):
        (folder / "weights.safetensors").write_bytes(_evil_pickle(folder))
        fix_weights_bytes(folder)

    add(_files_case("weights-is-a-pickle", "pickle", pickle_weights))

    def only_pt(folder, bases):
        write(folder / "model.pt", _evil_pickle(folder))
        return folder

    def pt_file(folder, bases):
        return write(folder / "evil.pt", _evil_pickle(folder))

    def pt_without_suffix(folder, bases):
        return write(folder / "checkpoint", _evil_pickle(folder))

    for slug, build in (("folder-with-only-a-pt", only_pt), ("pt-file", pt_file),
                        ("pickle-without-suffix", pt_without_suffix)):
        add(Input(f"{GROUP}/{slug}", GROUP, "pickle", build, "refuse",
                  entries=CHECKPOINT_ENTRIES))
    return cases


# --------------------------------------------------------------------------- run folders
def _copy_run(folder: Path, bases) -> Path:
    shutil.copytree(bases.checkpoint_run, folder, dirs_exist_ok=True)
    return folder


#: Voxel size (mm) of the checkpoint planted outside a run folder: an output with it came
#: from there (load_generator's result also says where it was loaded from).
OUTSIDE_SPACING = 7.25


def _outside_checkpoint(folder: Path, bases) -> Path:
    """A valid checkpoint beside the case folder, marked by its geometry's spacing."""
    outside = folder.parent / f"{folder.name}-outside"
    outside.mkdir(exist_ok=True)
    copy_checkpoint(outside, bases)
    doc = load_doc(outside)
    doc["state"]["geometry"]["spacing"] = [OUTSIDE_SPACING] * 3
    save_doc(outside, doc)
    return outside


def _run_case(slug, fault, mutate, expect="any"):
    def build(folder, bases):
        _copy_run(folder, bases)
        mutate(folder, bases)
        return folder

    return Input(f"{RUN_GROUP}/{slug}", RUN_GROUP, fault, build, expect,
                 entries=CHECKPOINT_ENTRIES, checks=(("forbidden_spacing", OUTSIDE_SPACING),))


def _latest(folder: Path, name) -> None:
    (folder / "checkpoints" / "latest.json").write_text(json.dumps({"name": name, "step": 2}))


def _only_step(folder: Path) -> None:
    for name in ("best", "final"):
        shutil.rmtree(folder / "checkpoints" / name)


def _run_inputs() -> list[Input]:
    def dotdot(folder, bases):
        outside = _outside_checkpoint(folder, bases)
        _latest(folder, f"../../{outside.name}")

    def absolute(folder, bases):
        _latest(folder, str(_outside_checkpoint(folder, bases)))

    def incomplete(folder, bases):
        _only_step(folder)
        (folder / "checkpoints" / STEP / "state.json").unlink()

    return [
        _run_case("valid-run", "control", lambda f, b: None),
        _run_case("latest-to-missing", "latest.json", lambda f, b: _latest(f, "step-000009")),
        _run_case("latest-to-missing-only-pointer", "latest.json",
                  lambda f, b: (_only_step(f), shutil.rmtree(f / "checkpoints" / STEP),
                                _latest(f, STEP)), "refuse"),
        _run_case("latest-dotdot-outside", "latest.json", dotdot),
        _run_case("latest-absolute-outside", "latest.json", absolute),
        _run_case("latest-garbage", "latest.json",
                  lambda f, b: (f / "checkpoints" / "latest.json").write_text("{garbage")),
        _run_case("latest-name-not-string", "latest.json", lambda f, b: _latest(f, [1, 2])),
        _run_case("latest-is-folder", "latest.json",
                  lambda f, b: ((f / "checkpoints" / "latest.json").unlink(),
                                (f / "checkpoints" / "latest.json").mkdir())),
        _run_case("only-incomplete-checkpoint", "no usable checkpoint", incomplete, "refuse"),
        _run_case("no-checkpoints-folder", "no usable checkpoint",
                  lambda f, b: shutil.rmtree(f / "checkpoints"), "refuse"),
        _run_case("empty-checkpoints-folder", "no usable checkpoint",
                  lambda f, b: (shutil.rmtree(f / "checkpoints"),
                                (f / "checkpoints").mkdir()), "refuse"),
    ]


def inputs() -> list[Input]:
    return [*_file_inputs(), *_run_inputs()]
