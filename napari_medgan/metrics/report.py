"""One evaluation report for a set of real and a set of synthetic volumes.

:func:`evaluate_sets` works on arrays/Volumes; :func:`evaluate_folders` reads
two folders, writes ``report.json`` and a PNG summary (both atomically) and is
what ``napari-medgan evaluate --real DIR --fake DIR [--reference-pairs]
[--mask DIR] --out report.json`` calls. Every figure in the report carries its
definition, direction and range; the data range and the feature extractor used
are stated once at the top level. See ``docs/metrics.md``.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_medgan.metrics import distribution as dist
from napari_medgan.metrics import memorization as mem
from napari_medgan.metrics.features import (
    FeatureExtractor,
    RandomConv3DFeatures,
    intensity_range_of,
    load_feature_extractor,
    train_feature_extractor,
)
from napari_medgan.metrics.image import DEFINITIONS as PAIRED_DEFINITIONS
from napari_medgan.metrics.image import paired_metrics

REPORT_FORMAT = "napari-medgan-metrics-report"
REPORT_VERSION = 1
SHAPE_RULE = (
    "set metrics use every volume centre-cropped to the per-axis minimum shape of all volumes "
    "(crop only: padding would invent voxels that shift histograms and features); the intensity "
    "histogram uses the uncropped volumes; paired metrics require equal shapes"
)


def _set_metric(name: str, compute) -> dict:
    """Entry with definition/direction/range; ``value`` None and ``skipped`` when not computable."""
    definition, better, value_range = dist.DEFINITIONS[name]
    entry = {"value": None, "definition": definition, "better": better, "range": value_range}
    try:
        value, extra = compute()
    except ValueError as err:  # e.g. a single volume: no covariance, no pairs
        return {**entry, "skipped": str(err)}
    return {**entry, "value": value, **extra}


def _unpack(items: Sequence, name: str) -> tuple[list[np.ndarray], list[str]]:
    if items is None or len(items) == 0:
        raise ValueError(f"{name}: no volumes given")
    arrays, names = [], []
    for i, item in enumerate(items):
        arr = np.asarray(getattr(item, "array", item))
        if arr.ndim != 3:
            raise ValueError(f"{name}[{i}]: expected a 3D volume (z, y, x), got shape {arr.shape}")
        arrays.append(arr)
        names.append(str(getattr(item, "source", None) or f"{name}[{i}]"))
    return arrays, names


def centre_crop(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Central ``shape`` block of ``array`` (every axis of ``shape`` <= the array's)."""
    starts = [(s - t) // 2 for s, t in zip(array.shape, shape)]
    return array[tuple(slice(a, a + int(t)) for a, t in zip(starts, shape))]


def _paired(real, fake, real_names, fake_names, masks, data_range) -> dict:
    if len(real) != len(fake):
        raise ValueError(
            f"reference_pairs: {len(real)} real but {len(fake)} fake volumes; "
            "pairs need equal counts"
        )
    if masks is not None and len(masks) != len(real):
        raise ValueError(f"masks: {len(masks)} masks for {len(real)} pairs")
    per_pair = []
    for i, (r, f) in enumerate(zip(real, fake)):
        if r.shape != f.shape:
            raise ValueError(
                f"reference_pairs: {fake_names[i]} has shape {f.shape} "
                f"but {real_names[i]} has {r.shape}"
            )
        m = None
        if masks is not None:
            m = np.asarray(getattr(masks[i], "array", masks[i])) > 0
            if m.shape != r.shape:
                raise ValueError(
                    f"masks[{i}]: shape {m.shape} differs from {real_names[i]} {r.shape}"
                )
        pair = {"real": real_names[i], "fake": fake_names[i]}
        per_pair.append({**pair, **paired_metrics(f, r, data_range, m)})
    mean = {}
    for key in PAIRED_DEFINITIONS:
        vals = [p[key] for p in per_pair if p[key] is not None]
        mean[key] = float(np.mean(vals)) if vals else None
    masked = masks is not None
    return {"definitions": PAIRED_DEFINITIONS, "mean": mean, "per_pair": per_pair, "masked": masked}


def _feature_metrics(ex: FeatureExtractor, real, real_c, fake_c, seed, warnings) -> tuple:
    if ex.intensity_range is not None:
        irange, source = ex.intensity_range, "stored with the extractor"
    else:
        irange, source = intensity_range_of(real, seed=seed), "0.5-99.5 percentiles of the real set"
    info = {**ex.describe(), "intensity_range": list(irange), "intensity_range_source": source}
    fr, ff = ex.extract(real_c, irange), ex.extract(fake_c, irange)
    used = {"features": f"{ex.name} ({ex.feature_dim}-d)"}
    if min(len(fr), len(ff)) <= ex.feature_dim:
        warnings.append(
            f"frechet_distance: {min(len(fr), len(ff))} samples for {ex.feature_dim} features; "
            "covariances are singular and FID is biased upwards -- compare at equal set sizes only"
        )

    def mmd():
        bw = dist.median_heuristic_bandwidth(fr, ff)
        return dist.compute_mmd(fr, ff, "rbf", bw), {**used, "kernel": "rbf", "bandwidth": bw}

    metrics = {
        "frechet_distance": _set_metric(
            "frechet_distance", lambda: (dist.frechet_distance(fr, ff), used)
        ),
        "mmd2": _set_metric("mmd2", mmd),
    }
    return info, metrics


def _evaluate(real, fake, real_names, fake_names, opts: dict) -> dict:
    from napari_medgan import __version__

    warnings: list[str] = []
    seed, data_range = int(opts["seed"]), opts["data_range"]
    if data_range is None:
        data_range = float(max(a.max() for a in real) - min(a.min() for a in real))
        range_source = "pooled max - min of the real set"
        if data_range <= 0:
            data_range, range_source = 1.0, "real set is constant; 1.0 used"
    else:
        data_range, range_source = float(data_range), "given"
    common = tuple(int(min(a.shape[ax] for a in real + fake)) for ax in range(3))
    if any(a.shape != common for a in real + fake):
        warnings.append(f"volumes differ in shape; set metrics use centre crops of shape {common}")
    real_c = [centre_crop(a, common) for a in real]
    fake_c = [centre_crop(a, common) for a in fake]
    ex = opts["feature_extractor"] or RandomConv3DFeatures(seed=seed)
    ex_info, feature_metrics = _feature_metrics(ex, real, real_c, fake_c, seed, warnings)

    def ratio():
        r = dist.diversity_ratio(real_c, fake_c, data_range=data_range, seed=seed)
        return r["value"], {"measure": r["measure"], "real": r["real"], "fake": r["fake"]}

    metrics = {
        "intensity_wasserstein": _set_metric(
            "intensity_wasserstein", lambda: (dist.histogram_wasserstein(real, fake, seed=seed), {})
        ),
        **feature_metrics,
        "diversity_ratio": _set_metric("diversity_ratio", ratio),
    }
    memorization = mem.memorization_summary(
        real_c,
        fake_c,
        opts["memorization_method"],
        opts["memorization_threshold"],
        data_range,
        real_names,
        fake_names,
    )
    warnings += memorization.pop("warnings")
    paired = None
    if opts["reference_pairs"]:
        paired = _paired(real, fake, real_names, fake_names, opts["masks"], data_range)
    shapes = {
        "real": [list(t) for t in sorted({a.shape for a in real})],
        "fake": [list(t) for t in sorted({a.shape for a in fake})],
        "common": list(common),
        "rule": SHAPE_RULE,
    }
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "package_version": __version__,
        "n_real": len(real),
        "n_fake": len(fake),
        "real": real_names,
        "fake": fake_names,
        "shapes": shapes,
        "data_range": {
            "value": data_range,
            "source": range_source,
            "used_by": "PSNR, SSIM, MS-SSIM, diversity, SSIM memorization",
        },
        "feature_extractor": ex_info,
        "seed": seed,
        "metrics": metrics,
        "memorization": memorization,
        "paired": paired,
        "warnings": warnings,
    }


def evaluate_sets(
    real: Sequence,
    fake: Sequence,
    *,
    reference_pairs: bool = False,
    masks: Sequence | None = None,
    feature_extractor: FeatureExtractor | None = None,
    memorization_threshold: float = 0.95,
    memorization_method: str = "ncc",
    seed: int = 0,
    data_range: float | None = None,
) -> dict:
    """Evaluate synthetic volumes against real ones.

    Parameters
    ----------
    real, fake : sequence of np.ndarray or Volume
        Volumes ``(z, y, x)`` in the same intensity units. With
        ``reference_pairs`` they are matched by position (``fake[i]`` is the
        prediction for ``real[i]``; pass both in sorted order).
    reference_pairs : bool
        Add paired metrics (MAE, PSNR, SSIM, MS-SSIM) per pair and their means.
    masks : sequence of arrays, optional
        One per pair (voxels > 0 are evaluated); only with ``reference_pairs``.
    feature_extractor : FeatureExtractor, optional
        Default ``RandomConv3DFeatures(seed=seed)``.
    memorization_threshold, memorization_method : float, {"ncc", "ssim"}
        See :mod:`napari_medgan.metrics.memorization`.
    seed : int
        Seeds subsampling, pair selection and the default extractor.
    data_range : float, optional
        Default: pooled ``max - min`` of the real set (stated in the report).

    Returns
    -------
    dict
        JSON-ready report (see ``docs/metrics.md`` for every field).
    """
    real_a, real_n = _unpack(real, "real")
    fake_a, fake_n = _unpack(fake, "fake")
    if masks is not None and not reference_pairs:
        raise ValueError("masks: only used by paired metrics; pass reference_pairs=True")
    if memorization_method not in mem.METHODS:
        raise ValueError(
            f"memorization_method must be one of {mem.METHODS}, got {memorization_method!r}"
        )
    opts = dict(reference_pairs=reference_pairs, masks=masks, feature_extractor=feature_extractor,
                memorization_threshold=memorization_threshold, seed=seed, data_range=data_range,
                memorization_method=memorization_method)  # fmt: skip
    return _evaluate(real_a, fake_a, real_n, fake_n, opts)


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        # JSON has no inf/nan: write them as strings ("inf" is the PSNR of identical volumes).
        return float(obj) if math.isfinite(obj) else str(float(obj))
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    return obj


def _resolve_extractor(extractor, real_arrays, seed: int) -> FeatureExtractor:
    if isinstance(extractor, FeatureExtractor):
        return extractor
    if extractor is None or extractor == "random":
        return RandomConv3DFeatures(seed=seed)
    if extractor == "train":
        return train_feature_extractor(real_arrays, seed=seed)
    return load_feature_extractor(extractor)


def _load_folder(folder, name: str, is_label: bool):
    from napari_medgan.io import list_volume_files, load_volume

    files = list_volume_files(folder)
    if not files:
        raise ValueError(f"{name}: no volume files in {folder}")
    return [load_volume(p, is_label=is_label) for p in files], files


def evaluate_folders(
    real_dir,
    fake_dir,
    reference_pairs: bool = False,
    mask_dir=None,
    out="report.json",
    png: bool = True,
    extractor="random",
    seed: int = 0,
    memorization_threshold: float = 0.95,
) -> dict:
    """Read two folders of volumes, evaluate them and write ``out`` (JSON) and a PNG beside it.

    Parameters
    ----------
    real_dir, fake_dir : path
        Folders of volumes (any format ``load_volume`` reads), read in sorted
        order; with ``reference_pairs`` the i-th fake is paired with the i-th real.
    reference_pairs : bool
        Compute paired metrics (equal counts and shapes required).
    mask_dir : path, optional
        Label maps, one per pair in sorted order; voxels > 0 are evaluated.
    out : path
        JSON report; the PNG goes to ``out`` with suffix ``.png``.
    png : bool
        Write the PNG summary (histograms, nearest-neighbour mid-slices).
    extractor : "random", "train", path or FeatureExtractor
        ``"random"``: fixed-seed random features; ``"train"``: self-supervised
        on the real folder; a path: ``.safetensors`` + ``.json`` pair.

    Returns
    -------
    dict
        The report, plus ``outputs`` naming the files written.
    """
    from napari_medgan.io.atomic import atomic_write_bytes, atomic_write_text

    real, real_files = _load_folder(real_dir, "real_dir", False)
    fake, fake_files = _load_folder(fake_dir, "fake_dir", False)
    if reference_pairs and len(real) != len(fake):
        raise ValueError(
            f"reference_pairs: {real_dir} has {len(real)} volumes but {fake_dir} has {len(fake)}"
        )
    masks = None
    if mask_dir is not None:
        masks, _ = _load_folder(mask_dir, "mask_dir", True)
        if len(masks) != len(real):
            raise ValueError(f"mask_dir: {mask_dir} has {len(masks)} masks for {len(real)} pairs")
    for v, p in zip(real + fake, real_files + fake_files):
        v.source = str(p)
    report = evaluate_sets(
        real,
        fake,
        reference_pairs=reference_pairs,
        masks=masks,
        feature_extractor=_resolve_extractor(extractor, [v.array for v in real], seed),
        memorization_threshold=memorization_threshold,
        seed=seed,
    )
    if not np.allclose(real[0].spacing, fake[0].spacing, rtol=1e-3):
        report["warnings"].append(
            f"spacing differs: {real_files[0].name} {real[0].spacing.tolist()} vs "
            f"{fake_files[0].name} {fake[0].spacing.tolist()} (x, y, z mm)"
        )
    out = Path(out)
    png_path = out.with_suffix(".png") if png else None
    report["outputs"] = {"json": str(out), "png": str(png_path) if png_path else None}
    if png_path is not None:
        atomic_write_bytes(png_path, render_summary_png(real, fake, report))
    atomic_write_text(out, json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n")
    return report


def render_summary_png(real: Sequence, fake: Sequence, report: dict, top: int = 3) -> bytes:
    """PNG bytes: intensity histograms, nearest-neighbour scores and mid-slice pairs.

    Mid axial slices (``array[z // 2]``, anterior up) of the ``top`` fakes
    closest to a real volume, beside that real volume, with their scores.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend state (napari may own Qt)

    real_a, fake_a = _unpack(real, "real")[0], _unpack(fake, "fake")[0]
    rng = np.random.default_rng(report.get("seed", 0))
    r_s, f_s = (
        np.concatenate([a.ravel() for a in arrs])[rng.integers(0, sum(a.size for a in arrs), 10**5)]
        for arrs in (real_a, fake_a)
    )
    mem_ = report["memorization"]
    nn = sorted(mem_["nearest"], key=lambda r: -r["score"])[:top]
    fig = Figure(figsize=(10, 3.2 * (1 + len(nn))), dpi=80)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1 + len(nn), 2)
    ax = fig.add_subplot(grid[0, 0])
    bins = np.linspace(min(r_s.min(), f_s.min()), max(r_s.max(), f_s.max()) + 1e-9, 80)
    for values, label in ((r_s, f"real (n={len(real_a)})"), (f_s, f"fake (n={len(fake_a)})")):
        ax.hist(values.astype(float), bins, density=True, alpha=0.5, label=label)
    w1 = report["metrics"]["intensity_wasserstein"]["value"]
    ax.set(title=f"intensities, W1 = {w1:.4g}", yscale="log", xlabel="intensity")
    ax.legend()
    ax = fig.add_subplot(grid[0, 1])
    colours = ["tab:red" if r["memorized"] else "tab:blue" for r in mem_["nearest"]]
    ax.bar(range(len(colours)), [r["score"] for r in mem_["nearest"]], color=colours)
    ax.axhline(mem_["threshold"], color="k", ls="--", label=f"threshold {mem_['threshold']}")
    title = f"nearest real volume ({mem_['method']}), {mem_['n_flagged']} flagged"
    ax.set(title=title, xlabel="fake index", ylabel="score")
    ax.legend()
    lo, hi = np.percentile(r_s, [0.5, 99.5])
    for row, r in enumerate(nn, start=1):
        flag = " MEMORIZED" if r["memorized"] else ""
        panels = ((fake_a[r["fake_index"]], f"fake: {Path(r['fake']).name}{flag}"),
                  (real_a[r["real_index"]], f"nearest real: {Path(r['real']).name}"))  # fmt: skip
        for col, (arr, label) in enumerate(panels):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(arr[arr.shape[0] // 2], cmap="gray", vmin=lo, vmax=hi)
            ax.set_title(f"{label}\nscore {r['score']:.4f}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def summarize_report(report: dict) -> dict:
    """The headline figures of a report (what the CLI and the demo print)."""
    summary = {name: entry.get("value") for name, entry in report["metrics"].items()}
    summary["feature_extractor"] = report["feature_extractor"].get("name")
    memo = report["memorization"]
    summary["memorized"] = f"{memo['n_flagged']}/{report['n_fake']} above {memo['threshold']} " \
                           f"({memo['method']})"
    if report.get("paired"):
        summary["paired_mean"] = report["paired"]["mean"]
    summary["data_range"] = report["data_range"]["value"]
    return _json_safe(summary)
