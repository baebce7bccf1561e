"""The set-up step of a reader study: every case on one grid, with one intensity window.

What a reader sees must not depend on where a case came from. :func:`common_grid` brings
volumes to one direction, spacing and shape (also used by Set metrics);
:func:`harmonize` adds one display window for all and strips names and positions. When that
cannot be done without giving the class away, :class:`StudyGridError` says why -- to the
person setting the study up, never to the reader. Arrays are ``(z, y, x)``; spacing and
fields of view are in ITK ``(x, y, z)`` order, mm.
"""

from __future__ import annotations

import numpy as np

from napari_medgan.io import Volume

#: Largest relative difference of field of view (per axis) the set-up step crops away.
FOV_TOLERANCE = 0.10
#: Smallest share of a case's 1-99 % intensity range that must fall in the common window.
WINDOW_OVERLAP = 0.5
#: Smallest share of the common window a case's 1-99 % intensity range must span.
WINDOW_SHARE = 0.2


class StudyGridError(ValueError):
    """The cases cannot be shown on one grid and window without giving their class away."""


def _robust_range(array: np.ndarray, max_voxels: int = 200_000) -> np.ndarray:
    flat = np.asarray(array, dtype=np.float32).ravel()
    return flat[:: max(1, flat.size // max_voxels)][:max_voxels]


def _centre_crop(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    starts = [(s - t) // 2 for s, t in zip(array.shape, shape)]
    return array[tuple(slice(a, a + t) for a, t in zip(starts, shape))]


def _extent(volume: Volume) -> np.ndarray:
    """Field of view (mm) along x, y, z."""
    return np.asarray(volume.shape[::-1], dtype=float) * volume.spacing


def common_grid(volumes: dict[str, Volume]) -> tuple[dict[str, Volume], list[str]]:
    """Every volume on one grid: one direction, spacing and shape, each named by its key.

    Volumes on one grid come back as they are (float32). Otherwise directions that differ
    are reoriented to RAS, every volume is resampled to the coarsest spacing per axis
    (:func:`~napari_medgan.io.resample_to_spacing`; upsampling the coarse ones would leave
    them blurrier, a cue) and centre-cropped to the smallest shape. Returns the volumes and
    notes saying what was done.

    Raises
    ------
    StudyGridError
        Directions that stay different after reorienting (oblique volumes), or fields of
        view more than :data:`FOV_TOLERANCE` apart; the message names the cases.
    """
    from napari_medgan.io import reorient_to_ras, resample_to_spacing

    vols = {k: v.with_array(np.asarray(v.array, dtype=np.float32), is_label=False, source=k)
            for k, v in volumes.items()}
    notes: list[str] = []
    first = next(iter(vols.values()))
    if not all(np.allclose(v.direction, first.direction, atol=1e-4) for v in vols.values()):
        vols = {k: reorient_to_ras(v) for k, v in vols.items()}
        notes.append("cases had different orientations: all reoriented to RAS")
        first = next(iter(vols.values()))
        odd = [k for k, v in vols.items() if not np.allclose(v.direction, first.direction,
                                                             atol=1e-4)]
        if odd:
            raise StudyGridError(f"case {odd[0]!r} is oblique in another direction than "
                                 f"{next(iter(vols))!r}: resample the cases to one "
                                 "orientation first")
    grids = {(v.shape, tuple(np.round(v.spacing, 4))) for v in vols.values()}
    if len(grids) == 1:
        return vols, notes
    extents = {k: _extent(v) for k, v in vols.items()}
    ext = np.array(list(extents.values()))
    bad = np.flatnonzero(ext.min(axis=0) < (1.0 - FOV_TOLERANCE) * ext.max(axis=0))
    if bad.size:
        axis = int(bad[0])
        small = min(extents, key=lambda k: extents[k][axis])
        large = max(extents, key=lambda k: extents[k][axis])
        raise StudyGridError(
            f"the cases cover different fields of view: {small!r} spans "
            f"{_mm(extents[small])} mm, {large!r} {_mm(extents[large])} mm (x, y, z); "
            "cropping to the smaller would show part of a volume next to whole ones. "
            "Bring every case to one field of view (crop or pad) first")
    spacing = np.max([v.spacing for v in vols.values()], axis=0)  # coarsest per axis
    resampled = 0
    for k, v in vols.items():
        if not np.allclose(v.spacing, spacing, rtol=1e-4):
            vols[k] = resample_to_spacing(v, spacing)
            resampled += 1
    shape = tuple(int(s) for s in np.min([v.shape for v in vols.values()], axis=0))
    vols = {k: v.with_array(np.ascontiguousarray(_centre_crop(v.array, shape)),
                            spacing=spacing) for k, v in vols.items()}
    notes.append(f"cases were on {len(grids)} grids: {resampled} resampled to "
                 f"{_mm(spacing, '.3g')} mm (x, y, z) and all centre-cropped to {shape} "
                 "(z, y, x)")
    return vols, notes


def harmonize(volumes: dict[str, Volume], percentiles: tuple[float, float] = (1.0, 99.0)
              ) -> tuple[dict[str, Volume], dict, list[str]]:
    """Every volume on one grid (:func:`common_grid`), and one intensity window for all.

    Parameters
    ----------
    volumes : {case id: Volume}
        Images, any grid.

    Returns
    -------
    (shown, display, notes)
        ``shown``: the blinded volumes (float32, one shape ``(Z, Y, X)``, one spacing and
        direction, origin 0, no name or metadata). ``display``: ``{"shape", "spacing"
        (x, y, z mm), "window", "resampled"}``. ``notes``: what was done, for the set-up.

    Raises
    ------
    StudyGridError
        As :func:`common_grid`, or a case whose 1-99 % intensity range mostly lies outside
        the common window or spans less than :data:`WINDOW_SHARE` of it (the window: those percentiles of all cases pooled, each case
        contributing the same number of voxels, so neither class sets it).
    """
    vols, notes = common_grid(volumes)
    samples = {k: _robust_range(v.array) for k, v in vols.items()}
    lo, hi = (float(x) for x in np.percentile(np.concatenate(list(samples.values())),
                                              percentiles))
    hi = hi if hi > lo else lo + 1.0
    for k, sample in samples.items():
        c_lo, c_hi = (float(x) for x in np.percentile(sample, percentiles))
        overlap = max(0.0, min(c_hi, hi) - max(c_lo, lo))
        # mostly outside the window (washed out), or a sliver of it (one flat grey)
        if c_hi > c_lo and (overlap < WINDOW_OVERLAP * (c_hi - c_lo)
                            or overlap < WINDOW_SHARE * (hi - lo)):
            raise StudyGridError(
                f"case {k!r} has intensities {c_lo:.4g} to {c_hi:.4g}, which fill little of "
                f"the common window {lo:.4g} to {hi:.4g}: the sets seem to use different units; "
                "rescale one set first")
    first = next(iter(vols.values()))
    shown = {k: Volume(v.array, spacing=first.spacing, origin=(0.0, 0.0, 0.0),
                       direction=first.direction) for k, v in vols.items()}
    resampled = sum(not np.allclose(v.spacing, first.spacing) for v in volumes.values())
    display = {"shape": list(first.shape), "spacing": [float(s) for s in first.spacing],
               "window": [lo, hi], "resampled": int(resampled)}
    return shown, display, notes


def _mm(values, spec: str = ".0f") -> str:
    return " x ".join(format(float(v), spec) for v in values)
