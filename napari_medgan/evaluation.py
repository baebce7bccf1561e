"""Judge a conditional model the way a reviewer would: on held-out data, against the
classical method it would replace, with the same figures for both.

A *case* is built from a clean held-out volume (and its label map): the input
the model and the baselines get (label map, low-resolution volume on its own
thick grid, noisy volume, masked volume + mask, source modality) and the truth
they are scored against, in original units. :func:`compute_baselines` runs the
baselines of :mod:`napari_medgan.baselines` for a loaded model (the lookup
table and the intensity map come from the model's own training data, stored
with its weights), and :func:`judge` scores the model and every baseline.

Used by ``benchmarks/quality.py``, the learning tests and the Synthesize &
Compare widget, so the three agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_medgan.io.volume import Volume
from napari_medgan.provenance import provenance_metadata


@dataclass
class Case:
    """One held-out test: what the model gets and what it should produce.

    ``condition`` is the model input (label map, LR / noisy / masked / source
    volume) in original units on its own grid; ``mask`` the inpainting mask
    (1 = missing) on the same grid; ``truth`` the clean answer on the output
    grid; ``region`` the voxels scored (the hole for inpainting, else None =
    all); ``noise_sigma`` the noise level in original units (denoise).
    """

    task: str
    condition: Volume
    truth: Volume
    mask: Volume | None = None
    region: np.ndarray | None = None
    noise_sigma: float | None = None
    info: dict = field(default_factory=dict)


def tissue_labels(image: Volume, classes: int = 4) -> Volume:
    """A ``classes``-class label map (background + tissues) of an intensity volume:
    multi-Otsu thresholds of the image smoothed with a 1-voxel Gaussian. A stand-in for a
    tissue segmentation (which, like an argmax of tissue probability maps, is smoother than
    thresholds of the raw voxels) when a real scan comes without one."""
    from scipy.ndimage import gaussian_filter
    from skimage.filters import threshold_multiotsu

    arr = gaussian_filter(np.asarray(image.array, dtype=np.float32), 1.0)
    thresholds = threshold_multiotsu(arr, classes=classes)
    return image.with_array(np.digitize(arr, thresholds).astype(np.uint8), is_label=True,
                            source=f"{image.source}_tissue")


def normalised_sigma(normalizer, sigma: float) -> float:
    """A noise standard deviation in original units, in the normaliser's units (what
    ``model.noise_std`` takes); measured at the middle of the window, away from its clipped
    ends."""
    mid = float(normalizer.inverse(np.float32(0.0)))
    return float(normalizer.forward(np.float32(mid + sigma)) - normalizer.forward(np.float32(mid)))


def split_halves(volume: Volume, axis: int | None = None) -> tuple[Volume, Volume]:
    """Split a volume into two halves along ``axis`` (array axis, z/y/x = 0/1/2; default the
    longest), each with its own correct geometry (the second half's origin moves)."""
    axis = int(np.argmax(volume.shape)) if axis is None else int(axis)
    n = volume.shape[axis]
    if n < 2:
        raise ValueError(f"{volume.source or 'volume'}: axis {axis} has {n} voxel(s); cannot split")
    cut = n // 2
    lo = [slice(None)] * 3
    hi = [slice(None)] * 3
    lo[axis], hi[axis] = slice(0, cut), slice(cut, n)
    ijk = np.zeros(3)
    ijk[2 - axis] = cut  # array axis (z, y, x) -> ITK index (i, j, k)
    origin = volume.origin + volume.direction @ (volume.spacing * ijk)
    first = volume.with_array(np.ascontiguousarray(volume.array[tuple(lo)]))
    second = volume.with_array(np.ascontiguousarray(volume.array[tuple(hi)]), origin=origin)
    return first, second


def make_case(task: str, truth: Volume, labels: Volume | None = None, *,
              factors=(2, 2, 2), noise: str = "gaussian", noise_sigma: float | None = None,
              hole_fraction: float = 0.35, source: Volume | None = None,
              rng: np.random.Generator | None = None) -> Case:
    """Build a held-out :class:`Case` from a clean volume (original units).

    ``label2image``: the condition is ``labels``. ``superres``: the truth is
    cropped to a multiple of ``factors`` (x, y, z) and box-averaged onto its thick
    grid (:func:`napari_medgan.data.superres.downsample_volume`, the training
    operator). ``denoise``: ``noise`` noise of ``noise_sigma`` (original units).
    ``inpaint``: a box of ``hole_fraction`` of each side, centred on a random
    foreground voxel, is blanked; only the hole is scored. ``translate``: the
    condition is ``source`` (same grid as ``truth``).
    """
    from napari_medgan import baselines

    rng = np.random.default_rng(0) if rng is None else rng
    truth = truth.with_array(np.asarray(truth.array, dtype=np.float32), is_label=False)
    if task == "label2image":
        if labels is None:
            raise ValueError("labels: label2image needs the held-out label map")
        return Case(task, labels, truth)
    if task == "translate":
        if source is None or source.shape != truth.shape:
            raise ValueError("source: translate needs the source modality on the truth's grid")
        return Case(task, source, truth)
    if task == "superres":
        from napari_medgan.data import superres

        truth = superres.crop_to_multiple(truth, factors)
        low = superres.downsample_volume(truth, factors)
        return Case(task, low, truth, info={"factors": tuple(int(f) for f in factors)})
    if task == "denoise":
        if noise_sigma is None or noise_sigma <= 0:
            raise ValueError(f"noise_sigma: expected > 0, got {noise_sigma!r}")
        arr = truth.array
        if noise == "rician":
            arr = np.clip(arr, 0, None)  # magnitude images
            truth = truth.with_array(arr)
        noisy = baselines.add_noise(arr, noise, float(noise_sigma), rng)
        return Case(task, truth.with_array(noisy.astype(np.float32)), truth,
                    noise_sigma=float(noise_sigma), info={"noise": noise})
    if task == "inpaint":
        arr = truth.array
        lo, hi = np.percentile(arr, [1, 99])
        fg = np.argwhere(arr > lo + 0.3 * (hi - lo))
        centre = fg[rng.integers(len(fg))] if len(fg) else np.array(arr.shape) // 2
        hole = np.zeros(arr.shape, dtype=np.uint8)
        box = []
        for c, n in zip(centre, arr.shape):
            edge = int(np.clip(round(n * hole_fraction), 1, n - 2))
            start = int(np.clip(c - edge // 2, 1, n - edge - 1))  # known voxels on every side
            box.append(slice(start, start + edge))
        hole[tuple(box)] = 1
        masked = np.where(hole > 0, 0, arr).astype(np.float32)
        mask = truth.with_array(hole, is_label=True, source="hole")
        return Case(task, truth.with_array(masked), truth, mask=mask, region=hole > 0)
    raise ValueError(f"task: {task!r} is not a conditional task")


def compute_baselines(loaded, case_or_condition, mask: Volume | None = None,
                      noise_sigma: float | None = None) -> dict[str, Volume]:
    """The classical answers for a conditional model's input, on the model's output grid.

    ``loaded`` is a :class:`napari_medgan.training.inference.LoadedModel`; the
    class-mean lookup (label2image) and the histogram-matching map (translate)
    come from its generator, fitted on its own training data. Returns
    ``{baseline name: Volume}`` in original units (names from
    :data:`napari_medgan.baselines.BASELINES`).
    """
    import torch

    from napari_medgan import baselines

    if isinstance(case_or_condition, Case):
        condition, mask = case_or_condition.condition, case_or_condition.mask
        noise_sigma = case_or_condition.noise_sigma
    else:
        condition = case_or_condition
    task = loaded.model.task
    gen = loaded.generator
    norm = loaded.output_normalizer
    out: dict[str, Volume] = {}
    src = np.asarray(condition.array, dtype=np.float32)

    def named(array, name) -> Volume:
        return condition.with_array(np.asarray(array, dtype=np.float32), is_label=False,
                                    source=f"{condition.source or 'input'}_{name}")

    if task == "label2image":
        means = norm.inverse(gen.class_means.detach().float().cpu().numpy())
        labels = np.asarray(condition.array).astype(np.int64)
        out["class-mean lookup"] = named(baselines.lookup_image(labels, means), "lookup")
    elif task == "superres":
        factors = loaded.model.superres_factors
        out["trilinear"] = baselines.upsample_trilinear(condition, factors)
        out["cubic B-spline"] = baselines.upsample_bspline(condition, factors)
    elif task == "denoise":
        sigma = noise_sigma
        out["Gaussian smoothing"] = named(baselines.denoise_gaussian(src, 1.0), "gaussian")
        out["non-local means"] = named(baselines.denoise_nlm(src, sigma), "nlm")
    elif task == "inpaint":
        if mask is None:
            raise ValueError("mask: inpainting baselines need the mask")
        out["biharmonic"] = named(baselines.inpaint_biharmonic(src, np.asarray(mask.array) > 0),
                                  "biharmonic")
    elif task == "translate":
        # the stored quantile map is histogram matching onto the training targets' histogram
        from napari_medgan.models.residual_unet3d import apply_intensity_map

        x = torch.from_numpy(np.asarray(loaded.normalizer.forward(src), dtype=np.float32))
        y = apply_intensity_map(x, gen.map_x.cpu(), gen.map_y.cpu()).numpy()
        out["histogram matching"] = named(norm.inverse(y), "histmatch")
    else:
        raise ValueError(f"{task}: no classical baseline (unconditional task)")
    for method, vol in out.items():
        vol.meta = {**vol.meta, **provenance_metadata("derived", method=method)}
    return out


def judge(truth: Volume, results: dict[str, Volume], region: np.ndarray | None = None,
          data_range: float | None = None) -> dict[str, dict[str, float]]:
    """SSIM, PSNR (dB) and MAE (original units) of each result against the truth.

    ``region`` restricts every figure to those voxels (inpainting: the hole);
    ``data_range`` defaults to the truth's max - min. A result on another grid
    than the truth raises ValueError naming it.
    """
    from napari_medgan.metrics.image import compute_mae, compute_psnr, compute_ssim

    ref = np.asarray(truth.array, dtype=np.float32)
    rng_ = float(data_range) if data_range else float(ref.max() - ref.min()) or 1.0
    figures = {}
    for name, vol in results.items():
        pred = np.asarray(vol.array, dtype=np.float32)
        if pred.shape != ref.shape or not (np.allclose(vol.spacing, truth.spacing, atol=1e-5)
                                           and np.allclose(vol.origin, truth.origin, atol=1e-4)):
            raise ValueError(f"{name}: result grid {pred.shape} at {np.round(vol.origin, 3)} "
                             f"does not match the truth {ref.shape} at "
                             f"{np.round(truth.origin, 3)}")
        figures[name] = {
            "SSIM": compute_ssim(pred, ref, rng_, mask=region),
            "PSNR": compute_psnr(pred, ref, rng_, mask=region),
            "MAE": compute_mae(pred, ref, mask=region),
        }
    return figures
