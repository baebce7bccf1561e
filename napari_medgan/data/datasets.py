"""Training data for every task: volumes in, random (condition, image) patch batches out.

Batches are ``(B, C, D, H, W)`` float32 tensors (``D, H, W`` = the numpy
``(z, y, x)`` axes of the volumes). Channel layout per task (``K`` = number of
classes, one-hot channels are exactly 0 or 1, the generator softmaxes them):

=============  =====================================  ===========================
task           ``"image"``                            ``"condition"``
=============  =====================================  ===========================
synthesis      image (1)                              --
joint          image, one-hot labels (1 + K)          --
label2image    image (1)                              one-hot labels (K)
translate      target modality (1)                    source modality (1)
denoise        image (1)                              image + Gaussian noise (1)
superres       image (1)                              avg-pooled, re-upsampled (1)
inpaint        image (1)                              image with box zeroed, mask (2)
=============  =====================================  ===========================

Degradations follow the usual paired-training recipes: pix2pix (Isola et al.
2017, "Image-to-Image Translation with Conditional Adversarial Networks",
CVPR) for paired conditions, SRGAN-style synthetic low-resolution inputs
(Ledig et al. 2017) and context-encoder boxes (Pathak et al. 2016).
Foreground-weighted crops follow nnU-Net's oversampling of foreground patches
(Isensee et al. 2021, Nature Methods 18).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medgan.io.volume import Volume
from napari_medgan.tasks import CONDITIONAL_TASKS, LABEL_TASKS, TASKS
_MAX_FG_INDICES = 200_000  # a random subset is enough to pick crop centres from


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, D, H, W)`` integer labels -> ``(B, K, D, H, W)`` float32 one-hot in {0, 1}.

    Written straight into the float32 result (``scatter_``), not through ``F.one_hot``'s
    channels-last int64 tensor and a permuted copy: for the demo's batch (4 x 64^3, 8
    classes) 17 ms instead of 48 ms per step on a 2-core CPU. A label outside
    ``0 .. num_classes - 1`` raises ValueError."""
    labels = labels.long()
    if labels.numel():
        low, high = (int(v) for v in torch.aminmax(labels))
        if low < 0 or high >= num_classes:
            raise ValueError(f"labels: values {low}..{high} do not fit num_classes={num_classes}")
    out = torch.zeros((labels.shape[0], num_classes, *labels.shape[1:]), dtype=torch.float32,
                      device=labels.device)
    return out.scatter_(1, labels[:, None], 1.0)


def degrade(task: str, image: torch.Tensor, model: Any, rng: np.random.Generator,
            zero: float = -1.0) -> torch.Tensor:
    """Condition for a restoration task from clean normalised images ``(B, 1, D, H, W)``.

    ``denoise``: add noise of ``model.noise`` kind with a standard deviation
    drawn per sample from ``[0.5, 1.5] * model.noise_std`` (normalised units), so
    one model serves a range of noise levels. Rician noise is the magnitude of
    complex Gaussian noise added to the magnitude image, whose zero is the
    normalised value ``zero`` of intensity 0 (Gudbjartsson & Patz 1995).
    ``superres``: the one degradation operator of
    :mod:`napari_medgan.data.superres` (box average over each thick voxel, then
    trilinear back onto the thin grid, per-axis ``model.superres_factors``).
    ``inpaint``: blank a random box of about ``model.inpaint_fraction`` of each
    side (0.6-1.2x, per axis), fill it with the biharmonic continuation of its
    surroundings (:func:`fill_hole`, the classical fill the network corrects) and
    append the box mask, giving ``(B, 2, D, H, W)`` (the layout inference uses:
    filled image, mask).
    """
    if task == "denoise":
        b = image.shape[0]
        sigma = float(model.noise_std) * torch.from_numpy(
            rng.uniform(0.5, 1.5, size=(b, 1, 1, 1, 1)).astype(np.float32))
        n1 = torch.from_numpy(rng.standard_normal(tuple(image.shape)).astype(np.float32))
        if model.noise == "rician":
            n2 = torch.from_numpy(rng.standard_normal(tuple(image.shape)).astype(np.float32))
            mag = (image - zero).clamp_min(0)
            return zero + torch.sqrt((mag + sigma * n1) ** 2 + (sigma * n2) ** 2)
        return image + sigma * n1
    if task == "superres":
        from napari_medgan.data.superres import degrade as degrade_sr
        from napari_medgan.data.superres import factors_zyx

        return degrade_sr(image, factors_zyx(model.superres_factors))
    if task == "inpaint":
        mask = torch.zeros_like(image)
        for b in range(image.shape[0]):
            box = []
            for n in image.shape[2:]:
                frac = float(model.inpaint_fraction) * rng.uniform(0.6, 1.2)
                edge = int(np.clip(round(n * frac), 1, n - 1))
                start = int(rng.integers(0, n - edge + 1))
                box.append(slice(start, start + edge))
            mask[(b, 0, *box)] = 1.0
        return torch.cat([fill_hole(image, mask), mask], dim=1)
    raise ValueError(f"model.task: {task!r} has no degradation (expected denoise, superres, "
                     "inpaint)")


def zero_level(normalizer) -> float:
    """Normalised value of intensity 0: the magnitude zero of Rician noise."""
    return float(normalizer.forward(np.float32(0.0)))


def fill_hole(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill the ``mask > 0`` voxels of ``(B, 1, D, H, W)`` images with the biharmonic
    continuation of the known ones (scikit-image; a few ms per 16^3 patch); known voxels are
    returned bit-identical. Training and inference both use this fill."""
    from napari_medgan.baselines import inpaint_biharmonic

    out = image.detach().cpu().numpy().copy()
    holes = mask.detach().cpu().numpy() > 0
    for b in range(out.shape[0]):
        if holes[b, 0].any() and not holes[b, 0].all():
            out[b, 0] = inpaint_biharmonic(out[b, 0], holes[b, 0])
    return torch.from_numpy(out).to(image.device)


def condition_from_volume(task: str, volume: Volume | np.ndarray, run: Any, normalizer=None,
                          rng: np.random.Generator | None = None,
                          num_classes: int | None = None) -> torch.Tensor:
    """Whole-volume condition ``(1, C, D, H, W)`` built with the training rules.

    Parameters
    ----------
    task : str
        A conditional task (see the module table).
    volume : Volume or array (z, y, x)
        ``label2image``: a label map; ``translate``: the source modality in
        original units; ``denoise``/``superres``/``inpaint``: a *clean* image in
        original units, degraded here (to check a model on data with a known
        answer; a volume that is already degraded goes to inference as it is).
    run : RunConfig or ModelConfig
        Supplies ``noise``, ``noise_std``, ``superres_factors``, ``inpaint_fraction``,
        ``num_classes``.
    normalizer : Normalizer
        Intensity normaliser of the condition (not needed for ``label2image``).
    rng : numpy Generator, optional
        Noise and box position; a fixed ``default_rng(0)`` when None.
    """
    model = getattr(run, "model", run)
    array = np.asarray(volume.array if isinstance(volume, Volume) else volume)
    if array.ndim != 3:
        raise ValueError(f"volume: expected a 3D array (z, y, x), got shape {array.shape}")
    rng = np.random.default_rng(0) if rng is None else rng
    if task == "label2image":
        k = int(num_classes or model.num_classes)
        labels = _as_labels(array, getattr(volume, "source", None) or "condition")
        if k < 2 or labels.max() >= k:
            raise ValueError(f"model.num_classes: labels go up to {int(labels.max())}, "
                             f"num_classes is {k}")
        return one_hot(torch.from_numpy(labels)[None], k)
    if task not in CONDITIONAL_TASKS:
        raise ValueError(f"model.task: {task!r} is unconditional; expected one of "
                         f"{CONDITIONAL_TASKS}")
    if normalizer is None:
        raise ValueError(f"normalizer: task {task!r} needs the training intensity normaliser")
    image = np.asarray(normalizer.forward(array.astype(np.float32)), dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    if task == "translate":
        return tensor
    return degrade(task, tensor, model, rng, zero=zero_level(normalizer))


def _as_labels(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype.kind == "f":
        if not np.allclose(array, np.round(array)):
            raise ValueError(f"{name}: label map has non-integer values")
        array = np.round(array)
    if array.size and array.min() < 0:
        raise ValueError(f"{name}: label map has negative values ({array.min()})")
    return array.astype(np.int64)


def _pad_to(array: np.ndarray, size, value: float) -> tuple[np.ndarray, np.ndarray]:
    """Pad each axis to at least ``size`` (one int, or one per axis z, y, x; centred);
    returns the array and pads-before (z, y, x)."""
    sizes = np.broadcast_to(np.asarray(size, dtype=int), (array.ndim,))
    before = np.array([max(0, m - n) // 2 for m, n in zip(sizes, array.shape)])
    after = np.array([max(0, m - n) for m, n in zip(sizes, array.shape)]) - before
    if not (before.any() or after.any()):
        return array, before
    return np.pad(array, list(zip(before, after)), constant_values=value), before


class TrainingData:
    """Normalised training volumes and the sampler of training batches.

    Built by :func:`build_training_data`. Attributes: ``task``,
    ``patch_size``, ``num_classes`` (0 when the task has no labels),
    ``image_channels``, ``condition_channels`` (0 for unconditional tasks),
    ``normalizer`` (of the images, or the *sources* for translate),
    ``target_normalizer`` (translate only, else None), ``reference`` (geometry
    template: the first volume of what the generator produces, after
    resampling and padding, in original units), ``volumes`` (normalised float32
    ``(z, y, x)`` arrays of what the generator produces: images, or targets for
    translate), ``label_arrays`` (label maps when given, also used to centre
    crops on foreground), ``names``, ``validation`` (held-out windows, see
    :func:`hold_out`; the training arrays no longer contain their scored slabs).
    """

    def __init__(self, task: str, model: Any, images: list[np.ndarray],
                 labels: list[np.ndarray] | None, targets: list[np.ndarray] | None,
                 normalizer, target_normalizer, reference: Volume, num_classes: int,
                 foreground_fraction: float, names: list[str], flip: bool = True,
                 validation: list[dict] | None = None) -> None:
        self.task, self.model = task, model
        self.validation = list(validation or [])
        self.patch_size = int(model.patch_size)
        self.patch_shape = _patch_shape(model)  # (z, y, x): a cube, or a family's whole volume
        self.normalizer, self.target_normalizer = normalizer, target_normalizer
        self.reference, self.num_classes, self.names = reference, int(num_classes), names
        self.foreground_fraction = float(foreground_fraction)
        self.flip = bool(flip)
        self._images, self._labels, self._targets = images, labels, targets
        self.image_channels = TASKS[task].image_channels(self.num_classes)
        self.condition_channels = TASKS[task].condition_channels(self.num_classes)
        pick = np.random.default_rng(0)
        self._foreground = []
        for i, image in enumerate(images):
            idx = np.flatnonzero(foreground(image, labels[i] if labels is not None else None))
            if idx.size > _MAX_FG_INDICES:
                idx = np.sort(pick.choice(idx, _MAX_FG_INDICES, replace=False))
            self._foreground.append(idx)

    def __len__(self) -> int:
        return len(self._images)

    @property
    def nbytes(self) -> int:
        """Host memory held by the training arrays (images, label maps, targets)."""
        arrays = [*self._images, *(self._labels or []), *(self._targets or [])]
        return int(sum(a.nbytes for a in arrays))

    @property
    def conditional(self) -> bool:
        return TASKS[self.task].conditional

    @property
    def volumes(self) -> list[np.ndarray]:
        return self._targets if TASKS[self.task].needs_targets else self._images

    @property
    def condition_volumes(self) -> list[np.ndarray] | None:
        """Normalised source volumes of ``translate`` (the other tasks build conditions from
        :attr:`volumes` or :attr:`label_arrays`), else None."""
        return self._images if TASKS[self.task].needs_targets else None

    @property
    def zero_level(self) -> float:
        """Normalised value of intensity 0 (the magnitude zero of Rician noise)."""
        return zero_level(self.normalizer)

    @property
    def label_arrays(self) -> list[np.ndarray] | None:
        """Integer label maps ``(z, y, x)`` aligned with :attr:`volumes` (padded), or None."""
        return self._labels

    def _crop_starts(self, i: int, rng: np.random.Generator) -> tuple[int, int, int]:
        shape, p = np.array(self._images[i].shape), np.array(self.patch_shape)
        fg = self._foreground[i]
        if fg.size and rng.random() < self.foreground_fraction:
            centre = np.array(np.unravel_index(fg[rng.integers(fg.size)], shape))
            start = np.clip(centre - p // 2, 0, shape - p)
        else:
            start = np.array([rng.integers(0, n - q + 1) for n, q in zip(shape, p)])
        return tuple(int(s) for s in start)  # type: ignore[return-value]

    def _random_transpose(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """A random permutation of the array axes that only swaps axes with the same voxel
        spacing, so the physics of the patch (anisotropic voxels) is unchanged.

        For super-resolution the thick direction stays where the model's factors put it
        and the patch turns under it: a 1x1x4 model also learns from thick slices
        simulated across the y and x axes of an isotropic volume (SMORE, Zhao et al.
        2020), three times the examples of one volume and no preference for one
        anatomical plane."""
        spacing = np.round(np.asarray(self.reference.spacing, dtype=float)[::-1], 4)  # z, y, x
        keys = [float(s) for s in spacing]
        perm = [0, 1, 2]
        for key in set(keys):
            group = [a for a in range(3) if keys[a] == key]
            shuffled = list(rng.permutation(group))
            for a, b in zip(group, shuffled):
                perm[a] = int(b)
        return tuple(perm)  # type: ignore[return-value]

    def _superres_pair(self, i: int, start, axes, perm) -> tuple[np.ndarray, np.ndarray]:
        """(patch, its low-resolution input) for super-resolution: the degradation is made on
        the patch plus up to two thick voxels of context on every side (where the volume has
        them) and then cropped, so the input near the patch borders is interpolated from real
        neighbours as it is inside a whole volume at inference, not from replicated borders
        (which cover half of a 16-voxel patch at 1x1x4). The thick-grid phase stays random.
        Returned in the array's own axis order; the caller transposes both by ``perm``, so
        array axis ``perm[k]`` is degraded with the model's factor for axis ``k``."""
        from napari_medgan.data.superres import degrade as degrade_sr
        from napari_medgan.data.superres import factors_zyx

        f_model = factors_zyx(self.model.superres_factors)
        f = [1, 1, 1]
        for k, a in enumerate(perm):
            f[a] = f_model[k]
        p, shape = self.patch_size, self._images[i].shape
        lo, size = [], []
        for s, n, k in zip(start, shape, f):
            m = 2 * k
            while m and p + 2 * m > n:
                m -= k
            q = p + 2 * m
            e = int(np.clip(s - m, 0, n - q))
            lo.append(e)
            size.append(q)
        window = tuple(slice(e, e + q) for e, q in zip(lo, size))
        big = np.ascontiguousarray(np.flip(self._images[i][window], axes) if axes
                                   else self._images[i][window])
        offset = [s - e for s, e in zip(start, lo)]
        for a in axes:  # the patch's place inside the flipped context
            offset[a] = size[a] - p - offset[a]
        with torch.no_grad():
            low = degrade_sr(torch.from_numpy(big)[None, None], f)[0, 0].numpy()
        inner = tuple(slice(o, o + p) for o in offset)
        return big[inner], low[inner]

    def validation_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(condition (1, C, ...), truth (1, 1, ...), scored (1, 1, ...) bool)`` per held-out
        window, made by the training degradation with a fixed seed (the same pairs at every
        validation). Inpainting puts its box in the scored slab, where the truth is unseen."""
        pairs = []
        rng = np.random.default_rng(2024)
        for window in self.validation:
            truth = torch.from_numpy(np.ascontiguousarray(window["image"]))[None, None]
            scored = torch.from_numpy(window["scored"])[None, None]
            if self.task == "label2image":
                cond = one_hot(torch.from_numpy(window["labels"].astype(np.int64))[None],
                               self.num_classes)
            elif self.task == "translate":
                cond = truth
                truth = torch.from_numpy(np.ascontiguousarray(window["target"]))[None, None]
            elif self.task == "inpaint":
                mask = torch.zeros_like(truth)
                idx = np.argwhere(window["scored"])
                lo, hi = idx.min(0), idx.max(0) + 1
                box = []
                for a, b in zip(lo, hi):
                    edge = max(1, int(round((b - a) * float(self.model.inpaint_fraction) * 1.5)))
                    start = a + (b - a - edge) // 2
                    box.append(slice(int(start), int(start + edge)))
                mask[(0, 0, *box)] = 1.0
                cond = torch.cat([fill_hole(truth, mask), mask], dim=1)
                scored = scored & (mask > 0)
            else:
                cond = degrade(self.task, truth, self.model, rng, zero=self.zero_level)
            pairs.append((cond, truth, scored))
        return pairs

    def sample_batch(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Random patches: ``{"image": (B, C, *patch_shape)}`` plus ``"condition"`` when
        conditional (a family that generates whole volumes has them as its patch shape).

        Each sample picks a volume uniformly, then a crop whose centre is a
        foreground voxel with probability ``foreground_fraction`` (labels > 0,
        else intensity above 10% of the robust range), else a uniform crop
        (``data.foreground_fraction``, by default 0.8, and 0 for denoising, whose
        noise is in the air as much as in the tissue).
        Conditional tasks with ``flip`` on also flip each pair along every axis
        with probability 1/2 (image, labels and targets alike, before the
        degradation); restoration tasks also permute the axes that share a voxel
        spacing. Both multiply the patches a small dataset offers.
        """
        if int(batch_size) < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size!r}")
        imgs, labs, tgts, lows = [], [], [], []
        for _ in range(int(batch_size)):
            i = int(rng.integers(len(self._images)))
            z, y, x = self._crop_starts(i, rng)
            window = tuple(slice(s, s + n) for s, n in zip((z, y, x), self.patch_shape))
            augment = self.flip and self.conditional
            axes = tuple(a for a in range(3) if rng.random() < 0.5) if augment else ()
            # transposes only where the mapping is local signal restoration; for label2image
            # and translate the plane carries anatomy (axial is not coronal), and permuting
            # axes cost label2image 0.15 SSIM on the held-out T1
            perm = self._random_transpose(rng) if augment and TASKS[self.task].restores \
                else (0, 1, 2)

            def crop(array: np.ndarray) -> np.ndarray:
                out = np.flip(array[window], axes) if axes else array[window]
                return np.transpose(out, perm) if perm != (0, 1, 2) else out

            if self.task == "superres":
                patch, low = self._superres_pair(i, (z, y, x), axes, perm)
                imgs.append(np.transpose(patch, perm))
                lows.append(np.transpose(low, perm))
            else:
                imgs.append(crop(self._images[i]))
            if self._labels is not None:
                labs.append(crop(self._labels[i]))
            if self._targets is not None:
                tgts.append(crop(self._targets[i]))
        image = torch.from_numpy(np.stack(imgs)[:, None].astype(np.float32))
        labels = torch.from_numpy(np.stack(labs)) if labs else None
        if self.task == "synthesis":
            return {"image": image}
        if self.task == "joint":
            return {"image": torch.cat([image, one_hot(labels, self.num_classes)], 1)}
        if self.task == "label2image":
            return {"image": image, "condition": one_hot(labels, self.num_classes)}
        if self.task == "translate":
            target = torch.from_numpy(np.stack(tgts)[:, None].astype(np.float32))
            return {"image": target, "condition": image}
        if self.task == "superres":
            return {"image": image,
                    "condition": torch.from_numpy(np.stack(lows)[:, None].astype(np.float32))}
        return {"image": image,
                "condition": degrade(self.task, image, self.model, rng, zero=self.zero_level)}

    def preview_conditions(self, n: int, rng: np.random.Generator | None = None,
                           ) -> torch.Tensor | None:
        """A fixed ``(n, C, P, P, P)`` condition batch (same ``rng`` seed, same batch); None if
        the task is unconditional."""
        if not self.conditional:
            return None
        return self.sample_batch(n, np.random.default_rng(0) if rng is None else rng)["condition"]

    def make_condition(self, volume: Volume | np.ndarray,
                       rng: np.random.Generator | None = None) -> torch.Tensor:
        """Whole-volume condition ``(1, C, D, H, W)``; see :func:`condition_from_volume`."""
        return condition_from_volume(self.task, volume, self.model, self.normalizer, rng,
                                     self.num_classes or None)


def _patch_shape(model: Any) -> tuple[int, int, int]:
    from napari_medgan.models import patch_shape

    return patch_shape(model)


def _paths(field: str, path: str) -> list[Path]:
    from napari_medgan.io import list_volume_files

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{field}: {p} does not exist")
    files = list_volume_files(p) if p.is_dir() else [p]
    if not files:
        raise ValueError(f"{field}: no volumes found in {p}")
    return files


def _match(field: str, images: list[Path], others: list[Path]) -> list[Path]:
    """Pair files with the images: by name stem (``case1`` <- ``case1``/``case1_seg``), else
    by sorted order when the counts agree."""
    from napari_medgan.io import volume_stem

    stems = {volume_stem(o): o for o in others}
    paired = []
    for img in images:
        s = volume_stem(img)
        hits = [o for st, o in stems.items() if st == s] or [
            o for st, o in stems.items() if st.startswith(s + "_") or st.startswith(s + "-")]
        paired.append(hits[0] if len(hits) == 1 else None)
    if all(p is not None for p in paired) and len(set(paired)) == len(paired):
        return paired  # type: ignore[return-value]
    if len(others) == len(images):
        return list(others)
    raise ValueError(f"{field}: {len(others)} volumes cannot be paired with {len(images)} images "
                     "(name them like the images, e.g. case1 -> case1_seg, or give as many)")


def _load_sources(run: Any) -> tuple[list[Volume], list[Volume] | None, list[Volume] | None]:
    from napari_medgan.io import load_volume

    data, task = run.data, run.model.task
    if data.source == "phantom":
        from napari_medgan.data.phantom import fit_spacing, make_phantom_set

        shape = (int(data.phantom_size),) * 3
        pairs = make_phantom_set(data.phantom_count, shape, fit_spacing(shape), run.train.seed,
                                 data.phantom_modality)
        targets = None
        if TASKS[task].needs_targets:
            other = "ct" if data.phantom_modality == "mr" else "mr"
            targets = [img for img, _ in make_phantom_set(data.phantom_count, shape,
                                                           fit_spacing(shape), run.train.seed,
                                                           other)]
        return [img for img, _ in pairs], [lab for _, lab in pairs], targets
    image_paths = _paths("data.source", data.source)
    images = [load_volume(p, is_label=False) for p in image_paths]
    labels = targets = None
    if data.labels and task in LABEL_TASKS:
        paths = _match("data.labels", image_paths, _paths("data.labels", data.labels))
        labels = [load_volume(p, is_label=True) for p in paths]
    if data.target and TASKS[task].needs_targets:
        paths = _match("data.target", image_paths, _paths("data.target", data.target))
        targets = [load_volume(p, is_label=False) for p in paths]
    return images, labels, targets


def _check_paired(field: str, images: list[Volume], others: list[Volume]) -> None:
    if len(others) != len(images):
        raise ValueError(f"{field}: got {len(others)} volumes for {len(images)} images")
    for img, other in zip(images, others):
        if other.shape != img.shape:
            raise ValueError(f"{field}: {other.source or 'volume'} has shape {other.shape} but "
                             f"image {img.source or 'volume'} has shape {img.shape} (z, y, x)")


def build_training_data(run: Any, images: list[Volume] | None = None,
                        labels: list[Volume] | None = None,
                        targets: list[Volume] | None = None) -> TrainingData:
    """Load, resample, normalise and pad the training volumes of ``run``.

    Parameters
    ----------
    run : RunConfig
        ``run.data`` says where volumes come from (``"phantom"``: the head
        phantom distribution, ``phantom_count`` heads of ``phantom_size``^3 at
        ``HEAD_FOV_MM / phantom_size`` mm with seeds from ``run.train.seed``;
        else a folder or file, with ``labels``/``target`` folders or files
        paired by name stem or sorted order); ``run.model`` the task and patch.
    images, labels, targets : list of Volume, optional
        Volumes handed in directly (e.g. napari layers); used instead of
        ``run.data.source`` when ``images`` is given.

    Raises
    ------
    ValueError
        Missing labels/targets for the task, unpaired or mismatched shapes
        (naming both volumes), labels beyond ``model.num_classes``.
    FileNotFoundError
        ``data.source`` / ``data.labels`` / ``data.target`` does not exist.
    """
    from napari_medgan.io import fit_normalizer, resample_to_spacing

    data, model = run.data, run.model
    task = model.task
    if images is not None:
        images = list(images)
        if not images:
            raise ValueError("images: expected at least one volume, got an empty list")
        labels = list(labels) if labels is not None else None
        targets = list(targets) if targets is not None else None
        field_l, field_t = "labels", "targets"
    else:
        images, labels, targets = _load_sources(run)
        field_l, field_t = "data.labels", "data.target"
    if task in LABEL_TASKS and labels is None:
        raise ValueError(f"{field_l}: task {task!r} needs label maps paired with the images "
                         "(set data.labels, or use data.source 'phantom')")
    if TASKS[task].needs_targets and targets is None:
        raise ValueError(f"{field_t}: task {task!r} needs target volumes paired with the "
                         "images (set data.target, or use data.source 'phantom')")
    # labels given to other tasks still steer the crops towards foreground
    targets = targets if TASKS[task].needs_targets else None
    for field, others in ((field_l, labels), (field_t, targets)):
        if others is not None:
            _check_paired(field, images, others)
    if data.spacing is not None:
        images = [resample_to_spacing(v, data.spacing) for v in images]
        labels = labels and [resample_to_spacing(v.with_array(v.array, is_label=True),
                                                 data.spacing) for v in labels]
        targets = targets and [resample_to_spacing(v, data.spacing) for v in targets]

    num_classes = 0
    label_arrays = None
    if labels is not None:
        label_arrays = [_as_labels(np.asarray(v.array), v.source or f"labels[{i}]")
                        for i, v in enumerate(labels)]
        top = max(int(a.max()) for a in label_arrays)
        dtype = np.uint8 if top < 256 else np.int32  # one-hot casts per batch
        label_arrays = [a.astype(dtype) for a in label_arrays]
    if label_arrays is not None and task in LABEL_TASKS:
        num_classes = int(model.num_classes) or top + 1
        if top >= num_classes:
            raise ValueError(f"model.num_classes: labels go up to {top} but num_classes is "
                             f"{num_classes}")
        if num_classes < 2:
            raise ValueError(f"{field_l}: label maps contain only background (0)")

    def fit(preset: str, volumes: list[Volume], field: str) -> Any:
        # Conditional generators are linear at the output and correct an estimate made from
        # the input, so they keep intensities beyond the preset's window (bright fat, vessels,
        # metal) instead of clipping them away; dcgan3d's tanh output needs the clip.
        extra = {"clip": False} if task in CONDITIONAL_TASKS and preset in ("ct", "mr") else {}
        try:
            return fit_normalizer(preset, [v.array for v in volumes], **extra)
        except ValueError as exc:  # e.g. constant data: name the files, not just the preset
            names = ", ".join(str(v.source) for v in volumes[:3] if v.source)
            more = f" and {len(volumes) - 3} more" if len(volumes) > 3 else ""
            raise ValueError(f"{field} ({names or 'volumes'}{more}): {exc}") from None

    normalizer = fit(data.preset, images, "images" if field_l == "labels" else "data.source")
    target_normalizer = None
    if targets is not None:
        # phantom targets know their modality, and "ct"/"mr" are also preset names
        phantom = targets[0].meta.get("phantom") or {}
        preset = data.target_preset or phantom.get("modality") or data.preset
        target_normalizer = fit(preset, targets, field_t)

    p = int(model.patch_size)
    shape = _patch_shape(model)

    def prepare(vol: Volume, norm) -> tuple[np.ndarray, np.ndarray]:
        arr = np.asarray(norm.forward(np.asarray(vol.array, dtype=np.float32)), dtype=np.float32)
        return _pad_to(arr, shape, float(arr.min()))  # background of the normalised volume

    norm_images, pads = zip(*(prepare(v, normalizer) for v in images))
    norm_targets = [prepare(v, target_normalizer)[0] for v in targets] if targets else None
    if label_arrays is not None:
        label_arrays = [_pad_to(a, shape, 0)[0] for a in label_arrays]
    first = targets[0] if targets else images[0]
    first_norm = norm_targets[0] if targets else norm_images[0]
    shift = first.direction @ (first.spacing * pads[0][::-1])  # pads are (z, y, x)
    reference = first.with_array(
        np.asarray((target_normalizer or normalizer).inverse(first_norm), dtype=np.float32),
        origin=first.origin - shift, is_label=False)
    norm_images = list(norm_images)
    validation = []
    if task in CONDITIONAL_TASKS and float(data.val_fraction) > 0:
        validation = hold_out(norm_images, label_arrays, norm_targets, float(data.val_fraction),
                              p, model)
    training = TrainingData(task, model, norm_images, label_arrays, norm_targets, normalizer,
                            target_normalizer, reference, num_classes, data.crop_fraction(task),
                            [v.source or f"volume_{i}" for i, v in enumerate(images)], data.flip,
                            validation)
    # names and colours of the label values (a Slicer .seg.nrrd, napari layer features): they
    # travel with the model into its checkpoint, bundles and exported datasets
    training.segments = next((list(v.meta["segments"]) for v in labels or []
                              if v.meta.get("segments")), None)
    return training


#: Volumes that give a validation slab (the rest train whole).
MAX_VALIDATION_VOLUMES = 4


def foreground(image: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Tissue voxels: ``labels > 0`` when there are labels, else intensity above 10% of the
    robust (1st-99th percentile) range, which leaves out air and padding."""
    if labels is not None:
        return labels > 0
    lo, hi = np.percentile(image, [1, 99])
    return image > lo + 0.1 * (hi - lo)


def slab_face(image: np.ndarray, labels: np.ndarray | None, fraction: float, patch: int,
              factors=(1, 1, 1)) -> tuple[int, bool, int] | None:
    """Where :func:`hold_out` takes a volume's validation slab: ``(axis, at_end, thickness)``,
    or None when no slab leaves a patch to train on.

    The slab is ``fraction`` of an axis (at least one voxel, whole thick voxels for
    super-resolution). By default it is the end of the longest axis; but a slab that is
    mostly air scores nothing a model learns (on the MNI152 template's training half the
    end slab was 1% tissue, and every model kept its untrained starting estimate), so when
    that slab holds less than half the tissue fraction (:func:`foreground`) of the best of
    the six faces, the face with the most tissue is taken instead.
    """
    longest = int(np.argmax(image.shape))
    tissue = foreground(image, labels)
    faces = []
    for axis in [longest] + [a for a in range(3) if a != longest]:
        n, f = image.shape[axis], factors[axis]
        k = max(f, int(np.ceil(fraction * n / f)) * f)
        if n - k < patch:
            continue
        for at_end in (True, False):
            index = [slice(None)] * 3
            index[axis] = slice(n - k, n) if at_end else slice(0, k)
            faces.append((float(tissue[tuple(index)].mean()), axis, at_end, k))
    if not faces:
        return None
    best = max(faces, key=lambda face: face[0])
    end = faces[0]  # the end of the longest axis, when it leaves a patch (listed first)
    chosen = end if end[1] == longest and end[0] >= 0.5 * best[0] else best
    return chosen[1:]


def hold_out(images: list[np.ndarray], labels: list[np.ndarray] | None,
             targets: list[np.ndarray] | None, fraction: float, patch: int,
             model: Any) -> list[dict]:
    """Split a validation slab off one face of each volume, in place.

    The slab (where: :func:`slab_face`; by default the end of the longest axis) is
    removed from the training arrays; a volume whose remainder would be shorter than a
    patch keeps all its voxels and gives no slab, as do volumes after the first
    :data:`MAX_VALIDATION_VOLUMES`. Each returned window is the slab plus up to half a
    patch of the training voxels next to it as *input* context (the network sees real
    neighbours, not padding), with ``scored`` marking the slab:
    ``{"image", "labels", "target", "scored", "volume", "axis", "at_end"}``.
    """
    factors = (1, 1, 1)
    if model.task == "superres":
        from napari_medgan.data.superres import factors_zyx

        factors = factors_zyx(model.superres_factors)
    windows = []
    for i, image in enumerate(images):
        if len(windows) == MAX_VALIDATION_VOLUMES:
            break
        face = slab_face(image, labels[i] if labels is not None else None, fraction, patch,
                         factors)
        if face is None:
            continue
        axis, at_end, k = face
        shape = image.shape
        n, f = shape[axis], factors[axis]
        context = min(patch // 2, n - k) // f * f

        def cut(a: np.ndarray, lo: int, hi: int) -> np.ndarray:
            index = [slice(None)] * 3
            index[axis] = slice(lo, hi)
            return np.ascontiguousarray(a[tuple(index)])

        # every other axis cropped to whole thick voxels, so the degradation applies
        crop = [slice(0, (m // g) * g) for m, g in zip(shape, factors)]
        crop[axis] = slice(None)
        lo, hi = (n - k - context, n) if at_end else (0, k + context)  # slab + context
        keep = (0, n - k) if at_end else (k, n)  # what stays for training

        def window(a: np.ndarray) -> np.ndarray:
            return cut(a, lo, hi)[tuple(crop)]

        win = {"image": window(image), "volume": i, "axis": axis, "at_end": at_end,
               "labels": window(labels[i]) if labels is not None else None,
               "target": window(targets[i]) if targets is not None else None}
        scored = np.zeros(win["image"].shape, dtype=bool)
        index = [slice(None)] * 3
        index[axis] = slice(context, None) if at_end else slice(0, k)
        scored[tuple(index)] = True
        win["scored"] = scored
        windows.append(win)
        images[i] = cut(image, *keep)
        if labels is not None:
            labels[i] = cut(labels[i], *keep)
        if targets is not None:
            targets[i] = cut(targets[i], *keep)
    return windows
