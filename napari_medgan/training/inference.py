"""Synthesis from a trained checkpoint: unconditional sampling and whole-volume conditional
inference by sliding windows (MONAI's ``sliding_window_inference``, Gaussian blending)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_medgan.config import ModelConfig
from napari_medgan.io.volume import Volume, VolumeError
from napari_medgan.tasks import TASKS
from napari_medgan.training.device import resolve_device
from napari_medgan.training.outputs import decode_samples, reference_from_state


@dataclass
class LoadedModel:
    """An EMA generator ready for sampling, with everything needed to decode its output."""

    generator: nn.Module
    model: ModelConfig
    normalizer: object
    target_normalizer: object | None
    reference: Volume
    path: Path
    step: int
    device: torch.device
    segments: list[dict] | None = None  # names and colours of the label values (see below)

    @property
    def output_normalizer(self):
        return self.target_normalizer or self.normalizer


def read_model_state(ckpt) -> tuple[ModelConfig, int, object, object | None, Volume]:
    """``(model config, step, normalizer, target normalizer or None, reference)`` of a loaded
    :class:`~napari_medgan.training.checkpoint.Checkpoint` (or model bundle), each field
    checked: CheckpointError with one line naming the file and the field otherwise. The
    one validation of what sampling needs, shared by loading and ``export-model``."""
    from napari_medgan.io.preprocess import Normalizer
    from napari_medgan.training.checkpoint import CheckpointError

    model = ckpt.model_config()
    step = ckpt.require("step", int)
    if step < 0:
        raise CheckpointError(f"{ckpt.path}: state field 'step' must be >= 0, got {step}")

    def parsed(key: str, parse):
        raw = ckpt.require(key, dict)
        try:
            return parse(raw)
        except (KeyError, TypeError, ValueError) as exc:  # VolumeError is a ValueError
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{ckpt.path}: state field {key!r} is invalid ({why})") from None

    normalizer = parsed("normalizer", Normalizer.from_dict)
    target = (parsed("target_normalizer", Normalizer.from_dict)
              if ckpt.state.get("target_normalizer") is not None else None)
    reference = parsed("geometry", reference_from_state)
    return model, step, normalizer, target, reference


def model_segments(state: dict, model: ModelConfig) -> list[dict] | None:
    """Names and colours of a model's label values: those of the label maps it was trained
    on (``segments`` in its state: a Slicer ``.seg.nrrd``, napari layer features), else the
    phantom's tissues for a phantom run, else default names; None for a model without label
    maps. The one naming rule for napari layers, ``.seg.nrrd`` outputs, bundles and
    exported datasets."""
    from napari_medgan.io.segments import class_segments

    task = TASKS[model.task]
    if not (task.outputs_labels or task.condition == "labels") or model.num_classes < 2:
        return None
    run = state.get("run_config")
    data = run.get("data") if isinstance(run, dict) else None
    names = None
    if isinstance(data, dict) and data.get("source") == "phantom":
        from napari_medgan.data.phantom import PHANTOM_LABELS

        names = PHANTOM_LABELS
    return class_segments(int(model.num_classes), state.get("segments"), names)


def load_generator(path: str | Path, device: str = "auto") -> LoadedModel:
    """Load the EMA generator of a run directory, checkpoint or model bundle (folder or
    ``.zip``, :mod:`napari_medgan.training.bundle`); safetensors + JSON only."""
    from napari_medgan.models import build_generator
    from napari_medgan.training.bundle import load_checkpoint_or_bundle

    ckpt = load_checkpoint_or_bundle(path)
    model, step, normalizer, target, reference = read_model_state(ckpt)
    gen = ckpt.build_module("ema", lambda: build_generator(model))
    dev = resolve_device(device)
    if dev.type == "cpu":
        torch.set_flush_denormal(True)  # denormals slow CPU inference many times over
    source = ckpt.meta.get("bundle") or ckpt.path  # a bundle is named by its folder or zip
    return LoadedModel(generator=gen.to(dev).eval(), model=model, normalizer=normalizer,
                       target_normalizer=target, reference=reference, path=Path(source),
                       step=step, device=dev, segments=model_segments(ckpt.state, model))


#: ``progress(done, total)``: called as synthesis goes on (volumes drawn, or window batches
#: run), so the CLI can draw a tqdm bar and napari its activity dock.
Progress = Callable[[int, int], None]


@torch.no_grad()
def generate(loaded: LoadedModel, n: int, seed: int = 0, reference: Volume | None = None,
             batch_size: int = 4, progress: Progress | None = None
             ) -> tuple[list[Volume], list[Volume]]:
    """Draw ``n`` volumes from an unconditional model; returns ``(images, labels)``.

    The same seed gives the same volumes. Output is in the training data's units
    (e.g. HU) and placed with the geometry of ``reference`` (default: the
    training reference), centred on it. ``progress(done, n)`` follows each batch.
    """
    if loaded.model.conditional:
        raise ValueError(f"{loaded.path}: model {loaded.model.name}/{loaded.model.task} is "
                         "conditional; give a condition volume instead of a sample count")
    if n < 1:
        raise ValueError(f"n: expected at least 1 sample, got {n}")
    gen = torch.Generator().manual_seed(int(seed))
    reference = reference or loaded.reference
    images, labels = [], []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        z = loaded.generator.sample_latent(count, generator=gen).to(loaded.device)
        out = loaded.generator(z)
        imgs, labs, _ = decode_samples(out, loaded.model, loaded.output_normalizer, reference)
        for i, v in enumerate(imgs):
            v.source = f"synthetic_{start + i:03d}"
        for v in labs:  # named label values: napari layers, .seg.nrrd files
            v.meta["segments"] = [dict(s) for s in loaded.segments or []]
        images += imgs
        labels += labs
        if progress is not None:
            progress(len(images), n)
    return images, labels


def make_condition(loaded: LoadedModel, volume: Volume, mask: Volume | None = None,
                   task: str | None = None):
    """Build the generator input for a whole volume at inference time.

    Returns ``(condition (1, C, D, H, W), grid)``, where ``grid`` is the volume
    whose geometry the output takes. Unlike training, nothing is degraded here:
    the user's volume *is* the noisy / low-resolution / masked input. ``task`` is the
    model's own unless given (``label2image`` for a pair model's :func:`image_stage`).
    """
    task = task or loaded.model.task
    if TASKS[task].condition == "labels":
        from napari_medgan.data.datasets import condition_from_volume

        return condition_from_volume(task, volume, loaded.model), volume
    name = volume.source or "condition"
    if volume.is_label:
        raise VolumeError(f"{name}: a label map, but {loaded.model.task} needs an image")
    grid = volume
    image = np.asarray(loaded.normalizer.forward(np.asarray(volume.array, dtype=np.float32)),
                       dtype=np.float32)
    if task == "superres":
        # the thin grid of the thick voxels (physically placed) and the training operator's
        # upsampling onto it: the network corrects exactly what it saw in training
        from napari_medgan.data import superres

        factors = loaded.model.superres_factors
        shape, geometry = superres.highres_geometry(volume, factors)
        up = superres.upsample(torch.from_numpy(image)[None, None], superres.factors_zyx(factors),
                               superres.ESTIMATE_MODE)
        grid = Volume(np.broadcast_to(np.zeros(1, np.float32), shape), source=volume.source,
                      **geometry)
        return up, grid
    if task == "inpaint":
        if mask is None:
            raise VolumeError(f"{name}: inpainting needs a mask (label layer or file) of the region")
        if mask.shape != volume.shape:
            raise VolumeError(f"{mask.source or 'mask'}: shape {mask.shape} does not match "
                              f"{name} {volume.shape}")
        from napari_medgan.data.datasets import fill_hole

        m = torch.from_numpy((np.asarray(mask.array) > 0).astype(np.float32))[None, None]
        filled = fill_hole(torch.from_numpy(image)[None, None], m)
        return torch.cat([filled, m], 1), grid
    return torch.from_numpy(image)[None, None], grid


#: The 8 flips of a volume: every subset of its three spatial axes (of a ``(B, C, D, H, W)``
#: tensor), the identity first.
FLIPS: tuple[tuple[int, ...], ...] = tuple(
    dims for r in range(4) for dims in itertools.combinations((2, 3, 4), r))


@torch.no_grad()
def run_windows(generator: nn.Module, condition: torch.Tensor, patch: int,
                overlap: float = 0.5, sw_batch_size: int = 2,
                padding_mode: str = "constant", progress: Progress | None = None,
                flips: bool = False) -> torch.Tensor:
    """A conditional generator over a whole ``(1, C, D, H, W)`` condition of any size:
    MONAI sliding windows of the training patch, Gaussian-weighted blending.
    ``flips`` averages the results for the 8 flips of the condition, each flipped back
    (the geometric self-ensemble of Lim et al., "Enhanced Deep Residual Networks for Single
    Image Super-Resolution", CVPRW 2017, in 3D), at 8x the time; valid for models trained
    on randomly flipped pairs (``data.flip``, on by default). ``progress(done, total)``
    follows the batches of windows of every pass."""
    from monai.inferers import sliding_window_inference

    variants = FLIPS if flips else ((),)
    predictor = generator
    if progress is not None:
        total = -(-window_count(condition.shape[2:], patch, overlap) // sw_batch_size)
        predictor = _counting(generator, total * len(variants), progress)
    out = None
    for dims in variants:
        x = condition.flip(dims) if dims else condition
        y = sliding_window_inference(x, roi_size=(patch,) * 3, sw_batch_size=sw_batch_size,
                                     predictor=predictor, overlap=overlap, mode="gaussian",
                                     padding_mode=padding_mode)
        y = y.flip(dims) if dims else y
        out = y if out is None else out.add_(y)
    return out / len(variants) if len(variants) > 1 else out


def _counting(generator: nn.Module, total: int, progress: Progress):
    """``generator`` that reports each call as one of ``total`` to ``progress``."""
    done = 0

    def predict(x: torch.Tensor) -> torch.Tensor:
        nonlocal done
        out = generator(x)
        done = min(done + 1, total)
        progress(done, total)
        return out

    return predict


def window_count(shape: tuple[int, ...], patch: int, overlap: float) -> int:
    """How many windows MONAI's sliding window runs over ``shape``: per axis one window
    when it fits, else ``ceil((size - patch) / step) + 1`` with ``step = patch * (1 -
    overlap)``."""
    step = max(int(patch * (1 - overlap)), 1)
    return math.prod(1 if size <= patch else -(-(size - patch) // step) + 1
                     for size in (int(s) for s in shape))


def image_stage(loaded: LoadedModel) -> nn.Module | None:
    """The label map -> image network of a pair model whose family has one (``twostage3d``:
    its SPADE stage 2, module function ``image_stage(generator)``), else None. With it a
    user's own (painted, edited) label map gets an image: :func:`synthesize_from`."""
    from napari_medgan.models import get_model

    stage = getattr(get_model(loaded.model.name), "image_stage", None)
    return stage(loaded.generator) if stage is not None else None


@torch.no_grad()
def synthesize_from(loaded: LoadedModel, volume: Volume, mask: Volume | None = None,
                    overlap: float = 0.5, sw_batch_size: int = 2,
                    progress: Progress | None = None, flip_ensemble: bool = True) -> Volume:
    """Run a conditional model over a whole volume of any size (sliding windows of the
    training patch size, Gaussian-weighted blending; with ``flip_ensemble``, averaged over
    the 8 flips of the input, see :func:`run_windows`) and return the result in the
    volume's geometry and the target's original units. For a pair model with an
    :func:`image_stage`, ``volume`` is a label map and the result the image that stage
    draws for it (one pass: a joint model trains without flipped pairs)."""
    stage = None if loaded.model.conditional else image_stage(loaded)
    if not loaded.model.conditional and stage is None:
        raise ValueError(f"{loaded.path}: model {loaded.model.name} is unconditional; "
                         "use generate() with a sample count")
    if stage is not None:
        task, generator, flips = "label2image", stage, False
    else:
        task, generator, flips = loaded.model.task, loaded.generator, flip_ensemble
    cond, grid = make_condition(loaded, volume, mask, task=task)
    out = run_windows(generator, cond.to(loaded.device), loaded.model.patch_size,
                      overlap=overlap, sw_batch_size=sw_batch_size, progress=progress,
                      flips=flips)
    result = np.asarray(loaded.output_normalizer.inverse(out[0, 0].float().cpu().numpy()),
                        dtype=np.float32)
    if TASKS[task].needs_mask and mask is not None:
        keep = np.asarray(mask.array) <= 0
        result = np.where(keep, np.asarray(volume.array, dtype=np.float32), result)
    return grid.with_array(result, is_label=False,
                           source=f"{Path(volume.source or 'volume').name}_{task}")
