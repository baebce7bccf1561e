"""Static pictures of volumes (matplotlib, Agg): mid-slices in three planes, side by side.

Axial slices are drawn with anterior at the top and the patient's left on the
right of the picture (radiological convention), coronal and sagittal slices
with superior at the top; pixel aspect follows the voxel spacing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_medgan.io.volume import Volume


def mid_slices(volume: Volume) -> list[tuple[str, np.ndarray, float]]:
    """``[(plane, 2D array, aspect)]`` for axial, coronal and sagittal mid-slices."""
    a = np.asarray(volume.array, dtype=np.float32)
    sx, sy, sz = volume.spacing
    z, y, x = (s // 2 for s in a.shape)
    return [
        ("axial", a[z], sy / sx),
        ("coronal", np.flipud(a[:, y, :]), sz / sx),
        ("sagittal", np.flipud(a[:, :, x]), sz / sy),
    ]


def save_side_by_side(path: str | Path, rows: list[tuple[str, Volume]],
                      labels: dict[int, Volume] | None = None, window=None,
                      title: str | None = None) -> Path:
    """Write a PNG grid: one row per volume, columns axial / coronal / sagittal.

    ``rows`` are ``(caption, volume)``; every row uses the same grey window
    (``window=(lo, hi)``, default the 1st-99th percentile over all rows) so
    real and synthetic volumes are comparable. ``labels`` maps a row index to
    a label map, drawn in a fourth column (axial mid-slice) so it never hides
    the image.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_medgan.io.atomic import atomic_path

    if window is None:
        pooled = np.concatenate([np.asarray(v.array, np.float32).ravel()[::7] for _, v in rows])
        window = tuple(np.percentile(pooled, [1, 99]))
    ncols = 4 if labels else 3
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.5 * ncols, 2.5 * len(rows)),
                             squeeze=False)
    for r, (caption, vol) in enumerate(rows):
        for c, (plane, img, aspect) in enumerate(mid_slices(vol)):
            axes[r][c].imshow(img, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect,
                              interpolation="nearest")
            if r == 0:
                axes[r][c].set_title(plane, fontsize=10)
        if labels:
            ax = axes[r][3]
            if r in labels:
                _, lab, aspect = mid_slices(labels[r])[0]
                ax.set_facecolor("black")
                ax.imshow(np.ma.masked_equal(lab, 0), cmap="tab10", vmin=0, vmax=9,
                          aspect=aspect, interpolation="nearest")
            else:
                ax.axis("off")
            if r == 0:
                ax.set_title("label map (axial)", fontsize=10)
        axes[r][0].set_ylabel(caption, fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
