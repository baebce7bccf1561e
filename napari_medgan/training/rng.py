"""Capture and restore random-number-generator states as JSON (for exact resume).

Python ``random``, numpy's global state, torch's CPU (and CUDA) generators, and
any named ``np.random.Generator`` / ``torch.Generator`` the caller passes.
Stored in a checkpoint's ``state.json``: no pickle involved.
"""

from __future__ import annotations

import base64
import random
from typing import Any

import numpy as np
import torch

from napari_medgan.training.checkpoint import CheckpointError, _encode


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _generator_state(gen: Any) -> dict:
    if isinstance(gen, torch.Generator):
        return {"kind": "torch", "state": _b64(gen.get_state())}
    if isinstance(gen, np.random.Generator):
        return {"kind": "numpy", "state": _encode(gen.bit_generator.state, "", {}, "generator")}
    raise TypeError(f"cannot capture the state of a {type(gen).__name__}")


def capture_rng(generators: dict[str, Any] | None = None) -> dict:
    """JSON-friendly RNG states: python ``random``, numpy global, torch CPU (and CUDA if used).

    ``generators`` adds named ``np.random.Generator`` / ``torch.Generator`` objects.
    """
    py_version, py_state, py_gauss = random.getstate()
    rng: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": _encode(np.random.get_state(legacy=False), "", {}, "numpy"),
        "torch": _b64(torch.get_rng_state()),
    }
    # Only when CUDA is already in use: querying it would otherwise create contexts.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    if generators:
        rng["generators"] = {name: _generator_state(g) for name, g in generators.items()}
    return rng


def restore_rng(state: dict, generators: dict[str, Any] | None = None) -> None:
    """Put back RNG states from :func:`capture_rng` (or a checkpoint state with an ``rng`` key)."""
    rng = state.get("rng", state)
    if not isinstance(rng, dict) or "torch" not in rng:
        raise CheckpointError("no RNG state to restore (expected the dict from capture_rng())")
    try:
        version, values, gauss = rng["python"]
        random.setstate((version, tuple(values), gauss))
        np_state = dict(rng["numpy"])
        np_state["state"] = dict(np_state["state"], key=np.asarray(np_state["state"]["key"],
                                                                     dtype=np.uint32))
        np.random.set_state(np_state)
        torch.set_rng_state(_unb64(rng["torch"]))
        if rng.get("cuda") and torch.cuda.is_available():
            count = min(len(rng["cuda"]), torch.cuda.device_count())
            torch.cuda.set_rng_state_all([_unb64(s) for s in rng["cuda"][:count]])
        for name, gen in (generators or {}).items():
            saved = rng["generators"][name]
            if isinstance(gen, torch.Generator) and saved["kind"] == "torch":
                gen.set_state(_unb64(saved["state"]))
            elif isinstance(gen, np.random.Generator) and saved["kind"] == "numpy":
                gen.bit_generator.state = saved["state"]
            else:
                raise TypeError(f"generator {name!r} is a {type(gen).__name__}, saved a "
                                f"{saved['kind']} one")
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot restore RNG state: {exc}") from None
