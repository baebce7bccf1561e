"""Checkpoints as safetensors + JSON, written atomically; nothing is ever unpickled.

A checkpoint is a directory::

    <run>/checkpoints/
        latest.json              {"name": "step-000500", "step": 500}  (pointer, atomic)
        step-000500/
            weights.safetensors  every tensor, dotted keys: generator.<param>, ema.<buffer>,
                                 optim_g.state.<idx>.exp_avg, state.<user key> ...
            state.json           format version, package version, module and optimizer
                                 metadata (param_groups, non-tensor state), the caller's
                                 ``state`` dict (configs, step, RNG, normaliser, geometry ...)
        best/  final/            hard-linked copies of a step checkpoint

Inside ``state.json`` a tensor is referenced as ``{"__tensor__": "<key>"}``.
A directory is written beside its target under a hidden temporary name and
renamed into place, so a crash leaves either the old or the new checkpoint.
Hidden ``.<name>.tmp-*`` / ``.old-*`` / ``.del-*`` leftovers are ignored by
readers and cleaned up by the next save into the same folder (one writer per
folder is assumed: under torchrun only rank 0 saves).
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from napari_medgan import __version__
from napari_medgan.io.atomic import (
    DiskFullError,
    atomic_write_text,
    default_mode,
    is_disk_full,
)
from napari_medgan.training.ema import unwrap

FORMAT = "napari-medgan-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
STATE_FILE = "state.json"
LATEST_FILE = "latest.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_REF = "__tensor__"
_STEP_RE = re.compile(r"^step-(\d+)$")
_LEFTOVER_RE = re.compile(r"^\.(.+)\.(tmp|old|del)-[A-Za-z0-9_]+$")
# spectral norm's entries in a state dict: the weight it normalises, its power-iteration vectors
_SPECTRAL_WEIGHT = re.compile(r"\.parametrizations\.weight\.original$")
_SPECTRAL_VECTOR = re.compile(r"\.parametrizations\.weight\.0\._[uv]$")
# Optimizer state entries that must have their parameter's shape (Adam, SGD, RMSprop, Adagrad...).
_PARAM_SHAPED = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "sum"}


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, pickled, too new, or does not fit the model."""


def _refuse(path: Path) -> CheckpointError:
    return CheckpointError(f"refusing to unpickle {path}: napari-medgan checkpoints are "
                           f"safetensors + JSON (a directory with {WEIGHTS_FILE} and {STATE_FILE})")


# --------------------------------------------------------------------------- encoding
def _encode(value: Any, key: str, tensors: dict, where: str) -> Any:
    """JSON-ready copy of ``value``; tensors move to ``tensors[key]`` and leave a reference."""
    if isinstance(value, torch.Tensor):
        if key in tensors:
            raise TypeError(f"{where}: tensor key {key!r} is used twice")
        tensors[key] = value
        return {_REF: key}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {k!r}")
            out[k] = _encode(v, f"{key}.{k}", tensors, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{key}.{i}", tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, PurePath):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where}: cannot store a {type(value).__name__} in {STATE_FILE} "
                    "(JSON values, numpy arrays/scalars and tensors only)")


def _decode(value: Any, tensors: dict, where: Path, clone: bool = False) -> Any:
    if isinstance(value, dict):
        if set(value) == {_REF}:
            if value[_REF] not in tensors:
                raise CheckpointError(f"{where}: {STATE_FILE} refers to tensor {value[_REF]!r} "
                                      f"which {WEIGHTS_FILE} lacks")
            tensor = tensors[value[_REF]]
            return tensor.clone() if clone else tensor
        return {k: _decode(v, tensors, where, clone) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, tensors, where, clone) for v in value]
    return value


def _prepare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached contiguous CPU tensors; safetensors refuses shared storage, so copy those."""
    out, seen = {}, set()
    for key, tensor in tensors.items():
        if tensor.is_sparse or tensor.device.type == "meta":
            raise TypeError(f"tensor {key!r}: sparse and meta tensors cannot be saved")
        tensor = tensor.detach().to("cpu").contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        if ptr and ptr in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out


# --------------------------------------------------------------------------- filesystem
def _fsync(path: Path) -> None:
    """Flush a file or directory to disk (directories cannot be opened on Windows: skip)."""
    try:
        fd = os.open(path, os.O_RDWR if path.is_file() else os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_complete(path: Path) -> bool:
    return (path / STATE_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def _remove_tree(path: Path) -> None:
    """Hide, then delete: a kill mid-delete must not leave a half checkpoint under a real name."""
    hidden = path.with_name(f".{path.name}.del-{secrets.token_hex(4)}")
    try:
        os.replace(path, hidden)
    except OSError:
        hidden = path
    shutil.rmtree(hidden, ignore_errors=True)


def _write_dir(target: Path, fill: Callable[[Path], None], clean: bool = True) -> None:
    """Let ``fill`` populate a hidden sibling directory, then rename it onto ``target``.

    An existing ``target`` is moved aside first (directories cannot be renamed over
    non-empty ones portably) and deleted once the new one is in place. A full disk raises
    :class:`~napari_medgan.io.atomic.DiskFullError` naming ``target``, with ``target`` as
    it was before. ``clean``: first remove the leftovers of interrupted saves in the
    parent folder (a checkpoints folder; not a folder of the user's, e.g. for a bundle).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        _clean_leftovers(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp's 0700 -> what the umask allows
        try:
            fill(tmp)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own type
            if is_disk_full(exc) and not isinstance(exc, DiskFullError):
                raise DiskFullError(target) from None
            raise
        _fsync(tmp)
        aside = None
        if target.exists():
            aside = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
            os.replace(target, aside)
        # A kill right here leaves only the aside copy; _resolve and _clean_leftovers recover it.
        os.replace(tmp, target)
        _fsync(target.parent)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _clean_leftovers(folder: Path) -> None:
    """Drop temporaries of interrupted saves; put back a moved-aside checkpoint whose swap died."""
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        match = _LEFTOVER_RE.match(entry.name)
        try:  # best effort: a leftover we cannot remove must not block the save
            if match and entry.is_dir():
                original = folder / match.group(1)
                if match.group(2) == "old" and not original.exists() and _is_complete(entry):
                    os.replace(entry, original)
                else:
                    shutil.rmtree(entry, ignore_errors=True)
            elif entry.name.startswith(f".{LATEST_FILE}.") and entry.name.endswith(".part.json"):
                entry.unlink(missing_ok=True)
        except OSError:
            pass


def _find_aside(path: Path) -> Path | None:
    """The moved-aside copy of ``path`` if a save was killed between its two renames."""
    if not path.parent.is_dir():
        return None
    asides = [p for p in path.parent.iterdir()
              if p.name.startswith(f".{path.name}.old-") and _is_complete(p)]
    return max(asides, key=lambda p: p.stat().st_mtime) if asides else None


def _step_dirs(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_RE.match(p.name))]
    return sorted(found)


def _latest_in(folder: Path) -> Path | None:
    """Checkpoint named by ``latest.json``, else the highest complete ``step-N``, final, best."""
    try:
        name = json.loads((folder / LATEST_FILE).read_text())["name"]
        if isinstance(name, str) and PurePath(name).name == name and not name.startswith("."):
            if _is_complete(folder / name):
                return folder / name
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        pass  # a missing or damaged pointer is only a hint; scan instead
    steps = [p for _, p in _step_dirs(folder) if _is_complete(p)]
    others = [folder / n for n in ("final", "best") if _is_complete(folder / n)]
    return steps[-1] if steps else (others[0] if others else None)


# --------------------------------------------------------------------------- saving
def save_checkpoint(directory: str | Path, *, modules: dict[str, nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer] | None = None,
                    state: dict | None = None) -> Path:
    """Write a checkpoint directory atomically.

    Parameters
    ----------
    directory : str or Path
        Checkpoint directory to create or replace (e.g. ``<run>/checkpoints/step-000500``).
        An existing directory is only replaced if it is a checkpoint.
    modules : dict of str to nn.Module
        Networks by name (``generator``, ``discriminator``, ``ema``). DDP/DataParallel and
        ``torch.compile`` wrappers are unwrapped, so keys never carry ``module.``/``_orig_mod.``.
    optimizers : dict of str to Optimizer, optional
        Optimizers by name; tensors go to safetensors, the rest (param_groups) to JSON.
    state : dict, optional
        Everything else (configs, step, :func:`capture_rng`, normaliser, geometry, metrics).
        JSON values, numpy values and tensors (stored as ``state.<path>``) are allowed.

    Returns
    -------
    Path
        ``directory``.
    """
    directory = Path(directory)
    optimizers = optimizers or {}
    names = [*modules, *optimizers]
    for name in names:
        if not isinstance(name, str) or not name or "." in name or name == "state" \
                or names.count(name) > 1:
            raise ValueError(f"checkpoint names must be unique, non-empty, dot-free and not "
                             f"'state'; got {name!r} among {names}")
    if directory.exists() and not (directory.is_dir() and (
            (directory / STATE_FILE).exists() or (directory / WEIGHTS_FILE).exists()
            or not any(directory.iterdir()))):
        raise CheckpointError(f"refusing to replace {directory}: it is not a napari-medgan "
                              "checkpoint")

    tensors: dict[str, torch.Tensor] = {}
    doc: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION,
                           "package_version": __version__, "torch_version": torch.__version__,
                           "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "modules": {}, "optimizers": {}}
    for name, module in modules.items():
        net = unwrap(module)
        weights = net.state_dict()
        for key, value in weights.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"modules[{name!r}]: state_dict entry {key!r} is a "
                                f"{type(value).__name__}, not a tensor")
            tensors[f"{name}.{key}"] = value
        # torch.save keeps state_dict._metadata (versions read by BatchNorm/spectral_norm hooks).
        doc["modules"][name] = {"class": type(net).__qualname__, "tensors": len(weights),
                                "metadata": json.loads(json.dumps(
                                    dict(getattr(weights, "_metadata", {}))))}
    for name, optimizer in optimizers.items():
        sd = optimizer.state_dict()
        doc["optimizers"][name] = {
            "class": type(optimizer).__qualname__,
            "state": _encode({str(i): s for i, s in sd["state"].items()}, f"{name}.state",
                             tensors, f"optimizers[{name!r}].state"),
            "param_groups": _encode(sd["param_groups"], f"{name}.param_groups", tensors,
                                    f"optimizers[{name!r}].param_groups")}
    doc["state"] = _encode(dict(state or {}), "state", tensors, "state")
    prepared = _prepare(tensors)

    def fill(tmp: Path) -> None:
        safetensors.torch.save_file(prepared, tmp / WEIGHTS_FILE,
                                    metadata={"format": "pt", FORMAT: str(FORMAT_VERSION)})
        os.chmod(tmp / WEIGHTS_FILE, default_mode())  # safetensors writes 0600
        _fsync(tmp / WEIGHTS_FILE)
        doc["weights_bytes"] = (tmp / WEIGHTS_FILE).stat().st_size
        with open(tmp / STATE_FILE, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())

    _write_dir(directory, fill)
    return directory


# --------------------------------------------------------------------------- loading
@dataclass
class Checkpoint:
    """A loaded checkpoint: the caller's ``state`` dict, all tensors, and file metadata."""

    path: Path
    state: dict
    tensors: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)

    @property
    def step(self) -> int | None:
        return self.state.get("step")

    @property
    def module_names(self) -> list[str]:
        return list(self.meta.get("modules", {}))

    def model_config(self):
        """The :class:`~napari_medgan.config.ModelConfig` this checkpoint was trained with.

        Raises CheckpointError (one line naming the checkpoint) when the entry is
        missing or invalid, or when the network layout it holds is not the one this
        version builds (``model_layout``; see ``LAYOUT_VERSION`` in each model module).
        """
        from napari_medgan.config import ModelConfig
        from napari_medgan.models import get_model

        raw = self.state.get("model_config")
        if not isinstance(raw, dict):
            raise CheckpointError(f"{self.path}: state has no 'model_config' object")
        raw = dict(raw)
        if "superres_factor" in raw:  # layout 1 stored one isotropic factor
            raw["superres_factors"] = raw.pop("superres_factor")
        try:
            expected = int(get_model(raw.get("name")).LAYOUT_VERSION)
        except ValueError as exc:
            raise CheckpointError(f"{self.path}: {exc}") from None
        layout = self.state.get("model_layout", 1)
        if layout != expected:
            raise CheckpointError(
                f"{self.path}: this {raw.get('name')} checkpoint holds network layout "
                f"{_brief(layout)} (model_layout), "
                f"but napari-medgan {__version__} builds layout {expected} "
                f"({get_model(raw['name']).LAYOUT_NOTE}); retrain the model")
        missing = [k for k in MODEL_FIELDS_REQUIRED if k not in raw]
        if missing:
            raise CheckpointError(f"{self.path}: model_config has no {missing[0]!r} field; the "
                                  "state is damaged")
        known = {f.name for f in fields(ModelConfig)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CheckpointError(
                f"{self.path}: model_config field(s) {', '.join(map(repr, unknown))} unknown to "
                f"napari-medgan {__version__} (written by version "
                f"{self.meta.get('package_version')}); use that version or retrain")
        try:
            return ModelConfig(**raw)
        except ValueError as exc:
            raise CheckpointError(f"{self.path}: {exc}") from None

    def require(self, key: str, kind: type | tuple[type, ...]) -> Any:
        """``state[key]``, which must be a ``kind``; one line naming the checkpoint and the
        field when it is missing or of another type (bools are not ints here)."""
        if key not in self.state:
            raise CheckpointError(f"{self.path}: state has no {key!r} field")
        value = self.state[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(_JSON_NAMES.get(k, k.__name__) for k in kinds)
            raise CheckpointError(f"{self.path}: state field {key!r} must be {names}, got "
                                  f"{_brief(value)}")
        return value

    def build_module(self, name: str, build: Callable[[], nn.Module]) -> nn.Module:
        """``build()`` a network and load module ``name`` into it, checking first on the
        meta device (no memory) that every shape matches the stored weights: a config
        edited to 100000 channels is refused before anything that size is allocated."""
        from napari_medgan.models import on_meta_device

        with on_meta_device():
            skeleton = build()
        self._check_shapes(name, skeleton.state_dict(), strict=True, meta=True,
                           optional=_optional_keys(skeleton))
        del skeleton
        module = build()
        self.load_module(name, module)
        return module

    def module_state(self, name: str) -> OrderedDict:
        """State dict of module ``name`` (keys without the ``name.`` prefix)."""
        if name not in self.meta.get("modules", {}):
            raise CheckpointError(f"{self.path}: no module {name!r} in checkpoint "
                                  f"(has: {', '.join(self.module_names) or 'none'})")
        prefix = f"{name}."
        out = OrderedDict((k[len(prefix):], v) for k, v in self.tensors.items()
                          if k.startswith(prefix))
        out._metadata = self.meta["modules"][name].get("metadata", {})  # type: ignore[attr-defined]
        return out

    def load_module(self, name: str, module: nn.Module, strict: bool = True):
        """Copy module ``name`` into ``module`` (wrappers are unwrapped).

        Returns
        -------
        torch's ``(missing_keys, unexpected_keys)`` named tuple (both empty when ``strict``).

        Raises
        ------
        CheckpointError
            If a shape differs (naming the first such key and both shapes) or, with
            ``strict``, if keys are missing or unexpected.
        """
        net, saved = unwrap(module), self.module_state(name)
        current, optional = net.state_dict(), _optional_keys(net)
        self._check_shapes(name, current, strict, optional=optional)
        for key in optional - set(saved):  # saved before it existed: keeps its default
            saved[key] = current[key]
        for key, value in saved.items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"{self.path}: {name}.{key} holds NaN or infinite "
                                      "weights; the model diverged or the file is damaged -- "
                                      "use an earlier checkpoint")
        bad = f"{self.path}: incompatible with the model config: {name}"
        try:
            return net.load_state_dict(saved, strict=strict)
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{bad}: {exc}") from None

    def _check_shapes(self, name: str, expected: dict, strict: bool, meta: bool = False,
                      optional: set[str] = frozenset()) -> None:
        """Shapes and dtypes of module ``name``'s stored tensors against ``expected``; with
        ``meta``, ``expected`` comes from :func:`~napari_medgan.models.on_meta_device`,
        which leaves spectral norm out: its stored weights are compared as plain ones.
        Keys in ``optional`` may be missing (see :func:`_optional_keys`)."""
        saved = self.module_state(name)
        if meta:
            saved = OrderedDict((_SPECTRAL_WEIGHT.sub(".weight", k), v)
                                for k, v in saved.items() if not _SPECTRAL_VECTOR.search(k))
        bad = f"{self.path}: incompatible with the model config: {name}"
        for key, value in expected.items():
            if key in saved and tuple(saved[key].shape) != tuple(value.shape):
                raise CheckpointError(f"{bad}.{key} has shape {tuple(saved[key].shape)} in the "
                                      f"checkpoint but {tuple(value.shape)} in the model")
            if key in saved and saved[key].is_floating_point() != value.is_floating_point():
                raise CheckpointError(f"{bad}.{key} is {saved[key].dtype} in the checkpoint "
                                      f"but {value.dtype} in the model")
        missing = [k for k in expected if k not in saved and k not in optional]
        unexpected = [k for k in saved if k not in expected]
        if strict and (missing or unexpected):
            what = (f"{len(missing)} key(s) missing from the checkpoint, first {name}.{missing[0]}"
                    if missing else
                    f"{len(unexpected)} unexpected key(s), first {name}.{unexpected[0]}")
            raise CheckpointError(f"{bad}: {what}")

    def load_optimizer(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        """Restore optimizer ``name`` (state tensors are copied, never shared with ``tensors``)."""
        entry = self.meta.get("optimizers", {}).get(name)
        if entry is None:
            raise CheckpointError(f"{self.path}: no optimizer {name!r} in checkpoint "
                                  f"(has: {', '.join(self.meta.get('optimizers', {})) or 'none'})")
        bad = f"{self.path}: optimizer {name!r} is incompatible with the model config"
        if entry.get("class") != type(optimizer).__qualname__:
            raise CheckpointError(f"{bad}: saved a {entry.get('class')}, got a "
                                  f"{type(optimizer).__qualname__}")
        state = {int(k): v for k, v in _decode(entry["state"], self.tensors, self.path,
                                                clone=True).items()}
        groups = _decode(entry["param_groups"], self.tensors, self.path, clone=True)
        live = optimizer.param_groups
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in live]:
            raise CheckpointError(f"{bad}: parameter groups of sizes "
                                  f"{[len(g['params']) for g in groups]} vs "
                                  f"{[len(g['params']) for g in live]}")
        for saved, current in zip(groups, live):
            for key, value in saved.items():  # JSON has no tuples; Adam's betas must be one
                if isinstance(current.get(key), tuple) and isinstance(value, list):
                    saved[key] = tuple(value)
        params = [p for g in live for p in g["params"]]
        for idx, param in zip([i for g in groups for i in g["params"]], params):
            for key, value in state.get(idx, {}).items():
                if key in _PARAM_SHAPED and isinstance(value, torch.Tensor) \
                        and value.shape != param.shape:
                    raise CheckpointError(f"{bad}: {name}.state.{idx}.{key} has shape "
                                          f"{tuple(value.shape)} but the parameter has "
                                          f"{tuple(param.shape)}")
        try:
            optimizer.load_state_dict({"state": state, "param_groups": groups})
        except (ValueError, RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{bad}: {exc}") from None


#: model_config fields every checkpoint has held since format 1 (later ones have defaults).
MODEL_FIELDS_REQUIRED = ("name", "task", "patch_size", "latent_dim", "channels", "num_classes")
_JSON_NAMES = {int: "a whole number", float: "a number", str: "a string", dict: "a JSON object",
               list: "a list", bool: "true or false"}


def _optional_keys(net: nn.Module) -> set[str]:
    """State keys ``net`` may load without: those its submodules list in ``OPTIONAL_STATE``
    (buffers added after checkpoints were saved, whose default reproduces the old model)."""
    return {f"{prefix}.{key}" if prefix else key
            for prefix, module in net.named_modules()
            for key in getattr(type(module), "OPTIONAL_STATE", ())}


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _resolve(path: Path) -> Path:
    """Checkpoint directory for a checkpoint dir, a file inside one, or a run directory."""
    if path.suffix.lower() in PICKLE_SUFFIXES and not path.is_dir():
        raise _refuse(path)  # by name alone: such a file is never opened
    if path.is_file():
        if path.name in (STATE_FILE, WEIGHTS_FILE):
            return path.parent
        _sniff(path)
        raise CheckpointError(f"{path}: not a napari-medgan checkpoint (expected a directory "
                              f"with {STATE_FILE} and {WEIGHTS_FILE}, or a run directory)")
    if path.is_dir():
        if (path / STATE_FILE).exists() or (path / WEIGHTS_FILE).exists():
            return path
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        found = _latest_in(folder)
        if found is not None:
            return found
        pickles = sorted(p for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise _refuse(pickles[0])
        raise CheckpointError(f"{path}: no checkpoint found (expected {STATE_FILE} and "
                              f"{WEIGHTS_FILE} here, or checkpoint directories under checkpoints/)")
    aside = _find_aside(path)
    if aside is not None:
        return aside
    raise CheckpointError(f"{path}: no such checkpoint")


def _sniff(path: Path) -> None:
    """Refuse zip (``torch.save``) and pickle files by their first bytes, before any parser."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) == 9 and head[8:9] == b"{" \
            and 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size:
        return  # a plausible safetensors header
    if head[:2] == b"PK" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04",
                                                                    b"\x05")):
        raise _refuse(path)


def parse_json(data: bytes, where: Path) -> Any:
    """JSON from ``data`` (read from ``where``); CheckpointError naming it when it is not
    UTF-8, not JSON, or nested too deeply to parse."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{where}: invalid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{where}: invalid JSON ({exc.msg} at line {exc.lineno}, "
                              f"column {exc.colno})") from None
    except RecursionError:
        raise CheckpointError(f"{where}: invalid JSON (nested too deeply)") from None


def _read_state(path: Path) -> dict:
    doc = parse_json(path.read_bytes(), path)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a napari-medgan checkpoint state ('format' is not "
                              f"{FORMAT!r})")
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: bad format_version {_brief(version)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version} (napari-medgan {doc.get('package_version')}) "
            f"is newer than this napari-medgan {__version__} reads (up to {FORMAT_VERSION}); "
            "upgrade napari-medgan")
    for key in ("modules", "optimizers", "state"):
        if not isinstance(doc.get(key), dict):
            raise CheckpointError(f"{path}: {key!r} must be a JSON object")
    return doc


def checkpoint_step(path: str | Path) -> int | None:
    """The step of the checkpoint :func:`load_checkpoint` would load for ``path``, from its
    ``state.json`` alone (no weights are read); None when there is none or it is damaged."""
    try:
        step = _read_state(_resolve(Path(path)) / STATE_FILE)["state"].get("step")
    except (CheckpointError, OSError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _read_tensors(path: Path, expected_bytes: Any) -> dict[str, torch.Tensor]:
    size = path.stat().st_size
    if isinstance(expected_bytes, int) and size != expected_bytes:
        raise CheckpointError(f"{path}: {size} bytes but {STATE_FILE} records weights_bytes "
                              f"{expected_bytes}; the file is truncated or does not belong to "
                              "this checkpoint")
    try:
        try:  # pread copies into memory, so no tensor keeps the file mapped (Windows deletes)
            return safetensors.torch.load_file(path, backend="pread")
        except TypeError:  # safetensors < 0.8 has no backend argument
            return safetensors.torch.load(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - the Rust parser raises its own exception type
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({exc})") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint without unpickling anything.

    Parameters
    ----------
    path : str or Path
        A checkpoint directory, its ``state.json`` or ``weights.safetensors``, or a run
        directory (the checkpoint named by ``checkpoints/latest.json``, else the highest step).
    map_location : str or torch.device
        Device for the tensors.

    Raises
    ------
    CheckpointError
        Missing or damaged files, pickle files, or a format newer than supported.
    """
    directory = _resolve(Path(path))
    weights, state_path = directory / WEIGHTS_FILE, directory / STATE_FILE
    if weights.is_file():
        _sniff(weights)
    for needed in (state_path, weights):
        if not needed.is_file():
            raise CheckpointError(f"{needed}: missing; a napari-medgan checkpoint holds "
                                  f"{STATE_FILE} and {WEIGHTS_FILE}")
    doc = _read_state(state_path)
    tensors = _read_tensors(weights, doc.get("weights_bytes"))
    device = torch.device(map_location)
    if device.type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    state = _decode(doc.pop("state"), tensors, directory)
    return Checkpoint(path=directory, state=state, tensors=tensors, meta=doc)


# --------------------------------------------------------------------------- RNG
# --------------------------------------------------------------------------- manager
def _link_copy(source: Path, target: Path) -> None:
    """Atomically make ``target`` a copy of checkpoint ``source`` (hard links when possible).

    Links are safe because checkpoint files are never modified in place, only replaced.
    """
    def fill(tmp: Path) -> None:
        for item in source.iterdir():
            try:
                os.link(item, tmp / item.name)
            except OSError:
                shutil.copy2(item, tmp / item.name)
                _fsync(tmp / item.name)

    _write_dir(target, fill)


class CheckpointManager:
    """Step checkpoints of one run: keep the last ``keep_last``, plus ``best`` and ``final``.

    Parameters
    ----------
    run_dir : str or Path
        Run directory; checkpoints live in ``<run_dir>/checkpoints/``.
    keep_last : int
        Number of ``step-N`` checkpoints to keep (the one just saved always survives).
    """

    def __init__(self, run_dir: str | Path, keep_last: int = 3) -> None:
        if isinstance(keep_last, bool) or int(keep_last) < 1:
            raise ValueError(f"keep_last: expected >= 1, got {keep_last!r}")
        self.run_dir = Path(run_dir)
        self.directory = self.run_dir / "checkpoints"
        self.keep_last = int(keep_last)
        self.best_metric: float | None = None
        best = self.best()
        if best is not None:  # resuming: compare new metrics with the stored best
            try:
                metric = _read_state(best / STATE_FILE)["state"].get("metric")
                self.best_metric = float(metric) if metric is not None else None
            except (CheckpointError, TypeError, ValueError):
                pass

    def save(self, step: int, *, modules: dict[str, nn.Module],
             optimizers: dict[str, torch.optim.Optimizer] | None = None,
             state: dict | None = None, metric: float | None = None,
             final: bool = False) -> Path:
        """Save ``step-<step>``; update ``latest.json``, ``best`` (lowest finite metric), ``final``.

        ``state`` gains ``step``, ``metric`` (when given) and ``best_metric``.
        Returns the step checkpoint's path.
        """
        step = int(step)
        if step < 0:
            raise ValueError(f"step: expected >= 0, got {step}")
        state = {**(state or {}), "step": step}
        is_best = metric is not None and math.isfinite(float(metric)) and (
            self.best_metric is None or float(metric) < self.best_metric)
        if metric is not None:
            state["metric"] = float(metric)
        state["best_metric"] = float(metric) if is_best else self.best_metric
        path = save_checkpoint(self.directory / f"step-{step:06d}", modules=modules,
                               optimizers=optimizers, state=state)
        atomic_write_text(self.directory / LATEST_FILE,
                          json.dumps({"name": path.name, "step": step}) + "\n")
        if is_best:
            _link_copy(path, self.directory / "best")
            self.best_metric = float(metric)
        if final:
            _link_copy(path, self.directory / "final")
        others = [p for _, p in _step_dirs(self.directory) if p != path]
        for old in others[:max(0, len(others) - (self.keep_last - 1))]:
            _remove_tree(old)
        return path

    def checkpoints(self) -> list[Path]:
        """Complete ``step-N`` checkpoints, oldest first (temporaries are never listed)."""
        return [p for _, p in _step_dirs(self.directory) if _is_complete(p)]

    def latest(self) -> Path | None:
        """The most recently saved checkpoint, or ``None`` if there is none."""
        return _latest_in(self.directory)

    def best(self) -> Path | None:
        """The ``best`` checkpoint, or ``None``."""
        return self.directory / "best" if _is_complete(self.directory / "best") else None
