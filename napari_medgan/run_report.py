"""A finished or stopped run, on one page: ``napari-medgan report RUN``.

Reads the run's training record (``history.jsonl``, :mod:`napari_medgan.training.history`)
and writes beside it (or into ``out``):

* ``history.csv``  -- one row per logged step: step, elapsed seconds, each loss, learning
  rates, seconds per step (for a spreadsheet);
* ``report.png``   -- loss curves, validation and checkpoint figures against the step, and
  the fixed-seed previews over time (middle slices);
* ``report.html``  -- the picture, the run's figures and its events, in one file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

import numpy as np

from napari_medgan.io.atomic import atomic_write_bytes, atomic_write_text
from napari_medgan.training.history import HISTORY_FILE, read_history

#: Rows of previews drawn in the report (evenly spaced over the run).
PREVIEW_ROWS = 6


def loss_rows(records: list[dict]) -> tuple[list[str], list[list]]:
    """``(header, rows)`` of the logged steps, one column per loss name."""
    steps = [r for r in records if r["kind"] == "step"]
    names = sorted({k for r in steps for k in r.get("losses", {})})
    header = ["step", "elapsed_s", *names, "lr_g", "lr_d", "seconds_per_step"]
    rows = [[r["step"], r.get("elapsed"), *(r["losses"].get(k) for k in names), r.get("lr_g"),
             r.get("lr_d"), r.get("seconds_per_step")] for r in steps]
    return header, rows


def summary(records: list[dict]) -> dict:
    """The run's figures: steps, time, last losses, best validation and checkpoint quality."""
    steps = [r for r in records if r["kind"] == "step"]
    starts = [r for r in records if r["kind"] == "start"]
    checkpoints = [r for r in records if r["kind"] == "checkpoint" and not r.get("best")]
    validation = [r for r in records if r["kind"] == "validation"]
    done = [r for r in records if r["kind"] == "done"]
    out = {
        "model": f"{starts[0]['model']}/{starts[0]['task']}" if starts else None,
        "device": starts[-1].get("device") if starts else None,
        "sessions": len(starts),
        "steps": records[-1]["step"] if records else 0,
        "training_seconds": records[-1]["elapsed"] if records else 0.0,
        "ended": done[-1]["reason"] if done else "running or killed",
        "last_losses": steps[-1]["losses"] if steps else {},
        "checkpoints": len(checkpoints),
    }
    if validation:
        best = min(validation, key=lambda r: r["validation_l1"])
        out["validation_l1"] = {"start": validation[0]["validation_l1"],
                                "best": best["validation_l1"], "best_step": best["step"]}
    if checkpoints and checkpoints[-1].get("quality") is not None:
        out["last_checkpoint_quality"] = checkpoints[-1]["quality"]
    return out


def _previews(folder: Path, records: list[dict]) -> list[tuple[int, dict]]:
    found = [r for r in records if r["kind"] == "preview" and (folder / r["file"]).is_file()]
    if len(found) > PREVIEW_ROWS:
        pick = np.linspace(0, len(found) - 1, PREVIEW_ROWS).round().astype(int)
        found = [found[i] for i in pick]
    out = []
    for r in found:
        with np.load(folder / r["file"]) as npz:
            out.append((r["step"], {k: npz[k] for k in npz.files}))
    return out


def draw(folder: Path, records: list[dict]):
    """The report's matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    previews = _previews(folder, records)
    planes = ("axial", "coronal", "sagittal")
    rows = 1 + len(previews)
    fig = plt.figure(figsize=(11, 3.2 + 1.8 * len(previews)), layout="constrained")
    grid = fig.add_gridspec(rows, 6, height_ratios=[2.2] + [1] * len(previews))
    header, table = loss_rows(records)
    ax = fig.add_subplot(grid[0, :4])
    for i, name in enumerate(header[2:-3]):
        values = np.array([row[2 + i] if row[2 + i] is not None else np.nan for row in table],
                          dtype=float)
        ax.plot([row[0] for row in table], values, label=name, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (mean over the logged interval)")
    ax.legend(fontsize=8, ncol=3)
    ax.set_title("losses")
    side = fig.add_subplot(grid[0, 4:])
    for kind, key, label in (("validation", "validation_l1", "validation L1 (held out)"),
                             ("checkpoint", "quality", "checkpoint quality")):
        points = [(r["step"], r[key]) for r in records
                  if r["kind"] == kind and r.get(key) is not None and not r.get("best")]
        if points:
            side.plot(*zip(*points), "o-", ms=3, lw=1, label=label)
    side.set_xlabel("step")
    side.set_title("figures (lower is better)")
    if side.lines:
        side.legend(fontsize=8)
    slices = [a for _, arrays in previews for k, a in arrays.items()
              if k.endswith(planes) and a.ndim == 2]
    window = np.percentile(np.concatenate([a.ravel() for a in slices]), (1, 99)) if slices \
        else (0.0, 1.0)  # one window for every preview: changes over time stay visible
    for row, (step, arrays) in enumerate(previews, start=1):
        for col in range(6):
            sample, plane = divmod(col, 3)
            key = f"{sample}_{planes[plane]}"
            axis = fig.add_subplot(grid[row, col])
            axis.set_axis_off()
            if key in arrays:
                axis.imshow(arrays[key], cmap="gray", aspect=float(arrays[f"{key}_aspect"]),
                            interpolation="nearest", vmin=window[0], vmax=window[1])
            if col == 0:
                axis.set_title(f"step {step}", fontsize=8, loc="left")
    fig.suptitle(f"{folder.name}: training record")
    return fig


def write_report(run: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write ``history.csv``, ``report.png`` and ``report.html`` for run folder ``run``.

    Raises
    ------
    FileNotFoundError
        ``run`` has no ``history.jsonl`` (not a run folder, or a run from before the record).
    """
    folder = Path(run)
    records = read_history(folder)
    if not records:
        raise FileNotFoundError(f"{folder}: no {HISTORY_FILE}; not a run folder, or the run "
                                "has not logged a step yet")
    target = Path(out) if out is not None else folder
    target.mkdir(parents=True, exist_ok=True)
    header, rows = loss_rows(records)
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([header, *rows])
    paths = {"csv": atomic_write_text(target / "history.csv", text.getvalue())}
    fig = draw(folder, records)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    paths["png"] = atomic_write_bytes(target / "report.png", png.getvalue())
    paths["html"] = atomic_write_text(target / "report.html",
                                      _html(folder.name, summary(records), records, png.getvalue()))
    return paths


def _html(name: str, figures: dict, records: list[dict], png: bytes) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in figures.items())
    events = "".join(
        f"<li>step {r['step']}: {html.escape(r.get('text') or r['kind'])}</li>"
        for r in records if r["kind"] in ("message", "done"))
    image = base64.b64encode(png).decode("ascii")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)}"
            "</title></head><body style='font-family:sans-serif'>"
            f"<h1>{html.escape(name)}</h1><table>{rows}</table>"
            f"<img alt='training record' src='data:image/png;base64,{image}' style='max-width:100%'>"
            f"<h2>Events</h2><ul>{events}</ul>"
            "<p>Losses per logged step: history.csv. Synthetic images, not for diagnosis.</p>"
            "</body></html>")
