"""Hostile checkpoints, derived from one real tiny dcgan3d checkpoint (see ``Bases``): shared
builders and the ``state.json`` field mutations; damaged files, weights, pickles and run folders
are in ``fuzz_checkpoint_files``.

Every input is a checkpoint directory (or a run directory, for ``latest.json`` cases)
in its own case folder, handed to ``napari-medgan generate`` and ``load_generator``:
``state.json`` fields made huge, negative, zero, of the wrong type, removed or unknown;
``weights.safetensors`` truncated, NaN, of the wrong shape or dtype, with a lying header;
pickles (which must never be unpickled: the payload would create ``UNPICKLED``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fuzz_cases import CHECKPOINT_ENTRIES, Input

GROUP = "checkpoint"
RUN_GROUP = "run-folder"
STEP = "step-000002"
REMOVE = object()
MARKER = "UNPICKLED"

#: model_config of the base checkpoint: field -> (original value, changes the EMA generator)
MODEL_FIELDS = {
    "name": ("dcgan3d", True), "task": ("synthesis", True), "patch_size": (16, True),
    "volume_shape": (None, False), "slab_size": (32, False), "latent_dim": (16, True),
    "channels": (8, True), "num_classes": (0, False), "spectral_norm": (True, False),
    "superres_factors": ([2, 2, 2], False), "inpaint_fraction": (0.35, False),
    "noise": ("gaussian", False), "noise_std": (0.1, False),
}
HUGE = {"patch_size": 160000, "latent_dim": 10**9, "channels": 100000, "slab_size": 10**9,
        "num_classes": 10**9, "volume_shape": [16000, 16000, 16000],
        "superres_factors": [4096, 4096, 4096], "inpaint_fraction": 1e308, "noise_std": 1e308,
        "name": "x" * 100000, "task": "y" * 100000, "noise": "z" * 100000}


# --------------------------------------------------------------------------- builders
def copy_checkpoint(folder: Path, bases) -> Path:
    """The base checkpoint's files copied into ``folder`` (which becomes the checkpoint)."""
    source = bases.checkpoint_run / "checkpoints" / STEP
    for item in source.iterdir():
        shutil.copy2(item, folder / item.name)
    return folder


def load_doc(folder: Path) -> dict:
    return json.loads((folder / "state.json").read_text())


def save_doc(folder: Path, doc: dict) -> None:
    (folder / "state.json").write_text(json.dumps(doc, indent=1))


def _set(doc: dict, path: tuple, value) -> None:
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is REMOVE:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


def _state_case(slug, fault, path: tuple, value, expect, field=None):
    """Change ``state.json`` at ``path`` (keys from the document root)."""
    def build(folder, bases):
        copy_checkpoint(folder, bases)
        doc = load_doc(folder)
        _set(doc, path, value)
        save_doc(folder, doc)
        return folder

    return Input(f"{GROUP}/{slug}", GROUP, fault, build, expect, entries=CHECKPOINT_ENTRIES,
                 field=field if field is not None else str(path[-1]))


def fix_weights_bytes(folder: Path) -> None:
    doc = load_doc(folder)
    doc["weights_bytes"] = (folder / "weights.safetensors").stat().st_size
    save_doc(folder, doc)


def rewrite_tensors(folder: Path, change) -> None:
    """Load the tensors, let ``change(dict)`` edit them, save, fix ``weights_bytes``."""
    import safetensors.torch

    path = folder / "weights.safetensors"
    tensors = safetensors.torch.load_file(str(path))
    change(tensors)
    safetensors.torch.save_file(tensors, str(path), metadata={"format": "pt"})
    fix_weights_bytes(folder)


def ema_keys(tensors: dict) -> list[str]:
    return sorted(k for k in tensors if k.startswith("ema.") and tensors[k].is_floating_point())


def fill_tensors(prefix: str, value: float, first_only: bool = False):
    def change(tensors):
        keys = sorted(k for k in tensors if k.startswith(prefix) and tensors[k].is_floating_point())
        for key in keys[:1] if first_only else keys:
            tensors[key] = tensors[key].clone().fill_(value)
    return change


# --------------------------------------------------------------------------- model_config
def _model_config_inputs() -> list[Input]:
    out = []
    for name, (original, arch) in MODEL_FIELDS.items():
        kind = type(original)
        variants: list[tuple[str, str, object, str]] = []
        if name in HUGE:
            variants.append(("huge", "huge model_config value", HUGE[name],
                             "refuse" if arch or name in ("superres_factors", "inpaint_fraction")
                             else "any"))
        if kind in (int, float) or name in ("volume_shape", "superres_factors"):
            variants.append(("negative", "invalid model_config value",
                             -1 if kind is not float else -0.5, "refuse"))
            if original != 0:
                variants.append(("zero", "invalid model_config value", 0, "refuse"))
        if kind in (int, float):
            variants.append(("numeric-string", "model_config wrong type", str(original), "any"))
        if kind is int:
            variants.append(("fractional", "model_config wrong type", original + 0.5, "refuse"))
        variants.append(("string", "model_config wrong type", "abc", "refuse"))
        if original is not None:
            variants.append(("null", "model_config wrong type", None,
                             "any" if name == "task" else "refuse"))
        variants.append(("list", "model_config wrong type", [1, 2], "refuse"))
        variants.append(("dict", "model_config wrong type", {"a": 1}, "refuse"))
        if kind is bool:
            variants.append(("false", "model_config other valid value", False, "any"))
        else:
            variants.append(("bool", "model_config wrong type", True, "refuse"))
        variants.append(("removed", "model_config field removed", REMOVE, "any"))
        for suffix, fault, value, expect in variants:
            out.append(_state_case(f"model-config-{name.replace('_', '-')}-{suffix}", fault,
                                   ("state", "model_config", name), value, expect))
    out.append(_state_case("model-config-unknown-key", "model_config unknown key",
                           ("state", "model_config", "bogus_field"), 1, "any"))
    return out


# --------------------------------------------------------------------------- other state
def _state_inputs() -> list[Input]:
    nan = float("nan")
    cases = []
    add = cases.append
    for key in ("model_config", "normalizer", "geometry"):
        add(_state_case(f"state-{key.replace('_', '-')}-removed", "state key removed",
                        ("state", key), REMOVE, "refuse"))
        for slug, value in (("string", "abc"), ("list", []), ("null", None), ("number", 5)):
            add(_state_case(f"state-{key.replace('_', '-')}-{slug}", "state key wrong type",
                            ("state", key), value, "refuse"))
    for slug, value, expect in (("removed", REMOVE, "any"), ("string", "abc", "any"),
                                ("negative", -5, "any"), ("null", None, "any"),
                                ("float-huge", 1e30, "any"), ("list", [1], "any")):
        add(_state_case(f"state-step-{slug}", "step wrong", ("state", "step"), value, expect))
    for slug, value, expect in (("future", 99, "refuse"), ("string", "abc", "refuse"),
                                ("removed", REMOVE, "any")):
        add(_state_case(f"state-model-layout-{slug}", "model_layout", ("state", "model_layout"),
                        value, expect))
    norm = ("state", "normalizer")
    for slug, field, value, expect in (
            ("preset-unknown", "preset", "abc", "refuse"),
            ("preset-removed", "preset", REMOVE, "any"),
            ("low-nan", "low", nan, "refuse"),
            ("low-string", "low", "abc", "refuse"),
            ("low-removed", "low", REMOVE, "any"),
            ("high-below-low", "high", -5.0, "refuse"),
            ("high-inf", "high", float("inf"), "refuse"),
            ("percentiles-short", "percentiles", [1], "refuse"),
            ("percentiles-string", "percentiles", "abc", "refuse"),
            ("clip-string", "clip", "abc", "refuse"),
            ("unknown-key", "bogus_field", 1, "any")):
        add(_state_case(f"normalizer-{slug}", "normalizer field", (*norm, field), value, expect))
    add(_state_case("target-normalizer-string", "normalizer field",
                    ("state", "target_normalizer"), "abc", "refuse"))
    add(_state_case("target-normalizer-bad-preset", "normalizer field",
                    ("state", "target_normalizer"), {"preset": "abc"}, "refuse",
                    field="preset"))
    geo = ("state", "geometry")
    for slug, field, value, expect in (
            ("spacing-zero", "spacing", [0, 1, 1], "refuse"),
            ("spacing-negative", "spacing", [-1, 1, 1], "refuse"),
            ("spacing-nan", "spacing", [nan, 1, 1], "refuse"),
            ("spacing-inf", "spacing", [float("inf"), 1, 1], "refuse"),
            ("spacing-string", "spacing", "abc", "refuse"),
            ("spacing-two-values", "spacing", [1, 1], "refuse"),
            ("spacing-removed", "spacing", REMOVE, "any"),
            ("origin-nan", "origin", [nan, 0, 0], "refuse"),
            ("direction-zero", "direction", [[0, 0, 0]] * 3, "refuse"),
            ("direction-string", "direction", "abc", "refuse"),
            ("shape-zero", "shape", [0, 16, 16], "any"),
            ("shape-huge", "shape", [10**6] * 3, "any"),
            ("shape-string", "shape", "abc", "refuse"),
            ("shape-removed", "shape", REMOVE, "any")):
        add(_state_case(f"geometry-{slug}", "geometry field", (*geo, field), value, expect))

    # -- the document around the state
    for slug, value, expect in (("future", 2, "refuse"), ("far-future", 999999, "refuse"),
                                ("string", "1", "refuse"), ("float", 1.0, "any"),
                                ("null", None, "refuse"), ("bool", True, "refuse"),
                                ("zero", 0, "refuse"), ("removed", REMOVE, "refuse")):
        add(_state_case(f"format-version-{slug}", "format_version", ("format_version",), value,
                        expect))
    add(_state_case("format-removed", "format", ("format",), REMOVE, "refuse"))
    add(_state_case("format-other", "format", ("format",), "something-else", "refuse"))
    for slug, delta, expect in (("plus-one", 1, "refuse"), ("minus-one", -1, "refuse")):
        def build(folder, bases, delta=delta):
            copy_checkpoint(folder, bases)
            doc = load_doc(folder)
            doc["weights_bytes"] += delta
            save_doc(folder, doc)
            return folder

        add(Input(f"{GROUP}/weights-bytes-{slug}", GROUP, "weights_bytes", build, expect,
                  entries=CHECKPOINT_ENTRIES, field="weights_bytes"))
    for slug, value, expect in (("negative", -1, "refuse"), ("zero", 0, "refuse"),
                                ("string", "abc", "any"), ("null", None, "any"),
                                ("removed", REMOVE, "any"), ("float-huge", 1e30, "any")):
        add(_state_case(f"weights-bytes-{slug}", "weights_bytes", ("weights_bytes",), value,
                        expect))
    add(_state_case("modules-removed", "modules", ("modules",), REMOVE, "refuse"))
    add(_state_case("modules-string", "modules", ("modules",), "abc", "refuse"))
    add(_state_case("modules-ema-removed", "modules", ("modules", "ema"), REMOVE, "refuse"))
    add(_state_case("optimizers-removed", "modules", ("optimizers",), REMOVE, "any"))
    return cases




def inputs() -> list[Input]:
    import fuzz_checkpoint_files

    return [*_model_config_inputs(), *_state_inputs(), *fuzz_checkpoint_files.inputs()]
