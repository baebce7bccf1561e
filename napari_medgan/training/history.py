"""The training record: ``history.jsonl`` in the run folder, one JSON object per line.

Every line has ``kind``, ``step``, ``time`` (UTC, ISO 8601) and ``elapsed`` (training wall
seconds since the run began, summed over its resumes). Kinds:

``start``       a run began or resumed (``resumed``, ``device``, ``precision``, ``model``)
``step``        a logged step: ``losses`` (means over the ``steps`` since the last line),
                ``lr_g``, ``lr_d``, ``seconds_per_step``
``preview``     a preview was drawn (``file``: the PNG of its middle slices, under ``previews/``)
``validation``  the held-out score of a conditional run (``validation_l1``)
``checkpoint``  a checkpoint was written (``name``, ``final``, ``quality``)
``message``     a warning or note (``level``, ``text``): divergence, rollback, ...
``done``        the run ended (``reason``: finished or stopped)

A resumed run goes back to its checkpoint's step, so :meth:`History.begin` keeps only the
lines up to that step: the record then has every step once, however often the run was
killed. A line cut off by a kill is dropped. Paths in the record are relative to the run
folder (a record can be shared).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from napari_medgan.io.atomic import atomic_write_bytes, atomic_write_text

HISTORY_FILE = "history.jsonl"


def read_history(folder: str | Path) -> list[dict]:
    """The records of a run folder, in order; lines that do not parse (a write cut off by a
    kill) are skipped. ``[]`` when the run has no history (yet)."""
    path = Path(folder) / HISTORY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


TENSORBOARD_FOLDER = "tensorboard"


class History:
    """Appends records to ``folder/history.jsonl`` (no-op when ``enabled`` is False: the
    ranks of a distributed run that do not write). When the ``tensorboard`` package is
    installed (``pip install "napari-medgan[tensorboard]"``), the losses, learning rates,
    figures and previews also go to TensorBoard event files in ``folder/tensorboard/``."""

    def __init__(self, folder: str | Path, enabled: bool = True) -> None:
        self.path = Path(folder) / HISTORY_FILE
        self.enabled = enabled
        self._elapsed0 = 0.0
        self._t0 = time.perf_counter()
        self.board = None  # a torch SummaryWriter, from begin() on, when tensorboard exists

    def begin(self, step: int) -> None:
        """Start (step 0) or resume at ``step``: keep the records up to it, continue the
        elapsed-time count from there."""
        if not self.enabled:
            return
        kept = [r for r in read_history(self.path.parent) if r["step"] <= step] if step else []
        if kept or self.path.exists():
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._elapsed0 = max((float(r.get("elapsed", 0.0)) for r in kept), default=0.0)
        self._t0 = time.perf_counter()
        self.board = _summary_writer(self.path.parent / TENSORBOARD_FOLDER, step)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None

    @property
    def elapsed(self) -> float:
        """Training wall seconds of the whole run so far (all its sessions)."""
        return self._elapsed0 + time.perf_counter() - self._t0

    def write(self, kind: str, step: int, **fields) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": int(step),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "elapsed": round(self.elapsed, 3), **_finite(fields)}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
        if self.board is not None:
            _to_board(self.board, record)

    def save_preview(self, step: int, images: list, labels: list) -> None:
        """Middle slices of a preview's samples as ``previews/step-N.npz`` (a few KB; the
        report draws them), and a ``preview`` record naming the file."""
        if not self.enabled:
            return
        import io

        import numpy as np

        from napari_medgan.visualize import mid_slices

        arrays = {}
        for i, volume in enumerate(images):
            for plane, array, aspect in mid_slices(volume):
                arrays[f"{i}_{plane}"] = array.astype(np.float32)
                arrays[f"{i}_{plane}_aspect"] = np.float32(aspect)
        for i, volume in enumerate(labels):
            for plane, array, _ in mid_slices(volume):
                arrays[f"{i}_{plane}_labels"] = array.astype(np.uint8)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        name = f"previews/step-{int(step):06d}.npz"
        atomic_write_bytes(self.path.parent / name, buffer.getvalue())
        self.write("preview", step, file=name, samples=len(images))
        if self.board is not None and images:
            axial = arrays["0_axial"]
            lo, hi = np.percentile(axial, (1, 99))
            self.board.add_image("preview/axial", np.clip((axial - lo) / max(hi - lo, 1e-6),
                                                          0, 1), step, dataformats="HW")


def _summary_writer(folder: Path, step: int):
    """A SummaryWriter that drops events after ``step`` (a resumed run redoes them), or None
    when the tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder), purge_step=step + 1 if step else None)


def _to_board(board, record: dict) -> None:
    step = record["step"]
    if record["kind"] == "step":
        for name, value in record["losses"].items():
            if value is not None:
                board.add_scalar(f"loss/{name}", value, step)
        for name in ("lr_g", "lr_d", "seconds_per_step"):
            if record.get(name) is not None:
                board.add_scalar(f"train/{name}", record[name], step)
    elif record["kind"] == "validation" and record.get("validation_l1") is not None:
        board.add_scalar("figures/validation_l1", record["validation_l1"], step)
    elif record["kind"] == "checkpoint" and record.get("quality") is not None \
            and not record.get("best"):
        board.add_scalar("figures/checkpoint_quality", record["quality"], step)
    elif record["kind"] in ("message", "done"):
        board.add_text("events", f"step {step}: {record.get('text') or record['kind']}", step)
    board.flush()


def _finite(value):
    """``value`` with non-finite floats as None: the record stays strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
