"""Memorization check: is a synthetic volume a near-copy of a training volume?

For every fake volume the most similar real (training) volume is found by
normalised cross-correlation (NCC) or SSIM over the whole volume; fakes whose
best score reaches a threshold are flagged. This is the nearest-neighbour
check used to study memorization by medical GANs and diffusion models
(e.g. Akbar et al. 2023, correlation of each synthetic image with its nearest
training image). The default threshold 0.95 is a starting point, not a
validated cut-off.

Whole-volume scores are high between *different* heads too (shared head
shape and background): for 32^3 phantoms of different seeds NCC reaches
~0.9. Calibrate the threshold against the real-to-real nearest-neighbour
scores (:func:`real_nn_scores`), which the report records.

References
----------
Akbar, M. U., Wang, W., Eklund, A. (2023). Beware of diffusion models for
synthesizing medical images -- a comparison with GANs in terms of memorizing
brain MRI and chest x-ray images. arXiv:2305.07644.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_medgan.metrics.image import compute_ssim_batch

#: Similarity methods accepted by :func:`nearest_neighbours`.
METHODS = ("ncc", "ssim")

DEFINITIONS = {
    "ncc": "Pearson correlation of all voxels: mean-centred, unit-norm flattened volumes, "
    "dot product; 1 = identical up to a linear intensity change, constant volumes score 0",
    "ssim": "mean SSIM (Wang et al. 2004; MONAI, Gaussian window 11, sigma 1.5) "
    "with the data range of the real set",
}


def _volumes(arrays: Sequence, name: str) -> list[np.ndarray]:
    out = [np.asarray(getattr(a, "array", a)) for a in arrays]
    if not out:
        raise ValueError(f"{name} is empty: need at least one volume")
    shapes = {a.shape for a in out}
    if len(shapes) > 1 or out[0].ndim != 3:
        raise ValueError(
            f"{name}: need 3D volumes (z, y, x) of one shape, got shapes {sorted(shapes)}"
        )
    return out


def _unit_rows(vols: list[np.ndarray]) -> np.ndarray:
    flat = np.stack([v.reshape(-1) for v in vols]).astype(np.float64)
    flat -= flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    # A constant volume has no correlation with anything: give it a zero row, not NaNs.
    return np.divide(flat, norm, out=np.zeros_like(flat), where=norm > 0)


def ncc_matrix(fake_arrays: Sequence, real_arrays: Sequence, batch_size: int = 32) -> np.ndarray:
    """Normalised cross-correlation of every fake with every real volume, ``(n_fake, n_real)``."""
    fake, real = _volumes(fake_arrays, "fake_arrays"), _volumes(real_arrays, "real_arrays")
    if fake[0].shape != real[0].shape:
        raise ValueError(f"fake and real shapes differ: {fake[0].shape} vs {real[0].shape}")
    real_u = _unit_rows(real)
    rows = []
    # Batches of fakes bound memory to batch_size flattened volumes at a time.
    for start in range(0, len(fake), max(1, int(batch_size))):
        rows.append(_unit_rows(fake[start : start + max(1, int(batch_size))]) @ real_u.T)
    return np.clip(np.concatenate(rows), -1.0, 1.0)


def ssim_matrix(
    fake_arrays: Sequence,
    real_arrays: Sequence,
    data_range: float | None = None,
    batch_size: int = 8,
) -> np.ndarray:
    """SSIM of every fake with every real volume (MONAI, batched), ``(n_fake, n_real)``."""
    fake, real = _volumes(fake_arrays, "fake_arrays"), _volumes(real_arrays, "real_arrays")
    if fake[0].shape != real[0].shape:
        raise ValueError(f"fake and real shapes differ: {fake[0].shape} vs {real[0].shape}")
    if data_range is None:
        data_range = float(max(r.max() for r in real) - min(r.min() for r in real)) or 1.0
    pairs = [(i, j) for i in range(len(fake)) for j in range(len(real))]
    out = np.empty((len(fake), len(real)))
    step = max(1, int(batch_size))
    for start in range(0, len(pairs), step):
        chunk = pairs[start : start + step]
        scores = compute_ssim_batch(
            np.stack([fake[i] for i, _ in chunk]), np.stack([real[j] for _, j in chunk]), data_range
        )
        for (i, j), s in zip(chunk, scores):
            out[i, j] = s
    return out


def similarity_matrix(
    fake_arrays, real_arrays, method: str = "ncc", data_range: float | None = None
) -> np.ndarray:
    """:func:`ncc_matrix` or :func:`ssim_matrix` by name."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "ncc":
        return ncc_matrix(fake_arrays, real_arrays)
    return ssim_matrix(fake_arrays, real_arrays, data_range)


def nearest_neighbours(
    fake_arrays: Sequence,
    real_arrays: Sequence,
    method: str = "ncc",
    data_range: float | None = None,
) -> list[dict]:
    """For each synthetic volume, the most similar real (training) volume.

    Parameters
    ----------
    fake_arrays, real_arrays : sequence of np.ndarray
        Volumes ``(z, y, x)``, all of one shape.
    method : {"ncc", "ssim"}
        Similarity (see :data:`DEFINITIONS`); higher = more alike for both.
    data_range : float, optional
        SSIM only; default the real set's pooled ``max - min``.

    Returns
    -------
    list of dict
        One per fake, in order: ``fake_index``, ``real_index`` (of the nearest
        real volume), ``score``, ``second_score`` (next best real; NaN with one
        real volume), ``method``.
    """
    sim = similarity_matrix(fake_arrays, real_arrays, method, data_range)
    order = np.argsort(-sim, axis=1, kind="stable")
    results = []
    for i, row in enumerate(sim):
        best = int(order[i, 0])
        second = float(row[order[i, 1]]) if sim.shape[1] > 1 else float("nan")
        results.append(
            {
                "fake_index": i,
                "real_index": best,
                "score": float(row[best]),
                "second_score": second,
                "method": method,
            }
        )
    return results


def real_nn_scores(
    real_arrays: Sequence, method: str = "ncc", data_range: float | None = None
) -> np.ndarray:
    """Each real volume's score to its nearest *other* real volume (calibrates the threshold).

    Needs at least 2 real volumes; returns ``(n_real,)``.
    """
    real = _volumes(real_arrays, "real_arrays")
    if len(real) < 2:
        raise ValueError(f"real_arrays: need at least 2 volumes, got {len(real)}")
    sim = similarity_matrix(real, real, method, data_range)
    np.fill_diagonal(sim, -np.inf)
    return sim.max(axis=1)


def flag_memorized(results: list[dict], threshold: float = 0.95) -> list[dict]:
    """Copies of ``results`` (from :func:`nearest_neighbours`) with ``memorized`` and ``threshold``.

    ``memorized`` is true when ``score >= threshold``. The default 0.95 is a
    starting point for whole-volume NCC; check it against :func:`real_nn_scores`
    (a threshold below the real-to-real scores flags ordinary anatomy).
    """
    threshold = float(threshold)
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [-1, 1], got {threshold}")
    return [
        {**r, "memorized": bool(r["score"] >= threshold), "threshold": threshold} for r in results
    ]


def memorization_summary(
    real_arrays: Sequence,
    fake_arrays: Sequence,
    method: str = "ncc",
    threshold: float = 0.95,
    data_range: float | None = None,
    real_names: Sequence[str] | None = None,
    fake_names: Sequence[str] | None = None,
) -> dict:
    """Nearest neighbours, flags and the real-to-real calibration, as one report section.

    Returns
    -------
    dict
        ``method``, ``definition``, ``threshold``, ``n_flagged``,
        ``fraction_flagged``, ``real_to_real_nearest`` (max/median/min of
        :func:`real_nn_scores`, None with one real volume), ``nearest`` (the
        flagged records with ``fake``/``real`` names added), ``note`` and
        ``warnings`` (list of str).
    """
    real_names = list(real_names or [f"real[{i}]" for i in range(len(real_arrays))])
    fake_names = list(fake_names or [f"fake[{i}]" for i in range(len(fake_arrays))])
    nearest = nearest_neighbours(fake_arrays, real_arrays, method, data_range)
    nn = flag_memorized(nearest, threshold)
    for r in nn:
        r["fake"], r["real"] = fake_names[r["fake_index"]], real_names[r["real_index"]]
    calib, warnings = None, []
    if len(real_arrays) > 1:
        s = real_nn_scores(real_arrays, method, data_range)
        calib = {"max": float(s.max()), "median": float(np.median(s)), "min": float(s.min())}
        if s.max() >= threshold:
            warnings.append(
                f"memorization: real volumes are this similar to each other (max {s.max():.3f} "
                f">= threshold {threshold}); flags are not specific"
            )
    flagged = sum(r["memorized"] for r in nn)
    return {
        "method": method,
        "definition": DEFINITIONS[method],
        "threshold": float(threshold),
        "n_flagged": flagged,
        "fraction_flagged": flagged / len(nn),
        "real_to_real_nearest": calib,
        "nearest": nn,
        "note": "a fake is flagged when its nearest real volume scores >= threshold; compare with "
        "real_to_real_nearest (each real volume's score to its nearest other real volume)",
        "warnings": warnings,
    }
