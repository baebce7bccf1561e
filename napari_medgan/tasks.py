"""The task registry: one record per task, the one place that says what a task is.

A task is what a model is trained to do; a model family (``models/``) is how,
and :data:`FAMILIES` says which tasks each family serves (a task may have
several). Code that needs to know something about a task asks its record here
instead of comparing task names, so adding a task is one record (plus a
family that serves it), not a branch in every module.

==============  ==========  =================  ==========  ======  ===========
task            condition   output             restores    pairs   families
==============  ==========  =================  ==========  ======  ===========
synthesis       --          image              --          --      dcgan3d, hagan3d
joint           --          image + labels     --          yes     dcgan3d, hagan3d,
                                                                       twostage3d
label2image     labels      image              --          yes     pix2pix3d
translate       image       image (other)      --          --      pix2pix3d
denoise         image       image              yes         --      pix2pix3d
superres        image       image (thin grid)  yes         --      pix2pix3d
inpaint         image+mask  image              yes         --      pix2pix3d
==============  ==========  =================  ==========  ======  ===========

Only :mod:`napari_medgan.config` and plain Python are imported here, so every
layer (core, CLI, widgets) can read the registry without pulling in torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """What one task needs and produces.

    Attributes
    ----------
    name : str
    condition : str
        The generator's input: ``""`` (noise: unconditional), ``"labels"`` (a
        label map, one-hot), ``"image"`` (an intensity volume) or
        ``"image+mask"`` (an image and the mask of what to fill).
    needs_labels : bool
        Training needs label maps paired with the images.
    needs_targets : bool
        Training needs target volumes paired with the images (another modality):
        the images are the conditions and the targets what is generated.
    outputs_labels : bool
        The generator draws label maps along with the images.
    restores : bool
        The condition is a degraded copy of the target made from a clean image
        (super-resolution, denoising, inpainting): local signal restoration,
        so training may also permute axes of equal spacing.
    pairs : bool
        Its results are image + label pairs a segmenter can be trained on
        (``export-dataset``): the labels are drawn, or are the condition.
    summary : str
        One line for help texts and tooltips.
    uniform_crops : bool
        Training crops are drawn uniformly over the volume by default instead of
        centred on tissue (``data.foreground_fraction``): the degradation is in every
        voxel, air included (noise), and the air must be learned as well as the tissue.
    """

    name: str
    condition: str
    needs_labels: bool
    needs_targets: bool
    outputs_labels: bool
    restores: bool
    pairs: bool
    summary: str
    uniform_crops: bool = False

    @property
    def conditional(self) -> bool:
        return bool(self.condition)

    @property
    def needs_mask(self) -> bool:
        return self.condition == "image+mask"

    def condition_channels(self, num_classes: int) -> int:
        """Channels of the generator's condition input (0: unconditional)."""
        return {"": 0, "labels": int(num_classes), "image": 1, "image+mask": 2}[self.condition]

    def image_channels(self, num_classes: int) -> int:
        """Channels of what the generator produces (image, plus one-hot labels when drawn)."""
        return 1 + (int(num_classes) if self.outputs_labels else 0)


TASKS: dict[str, Task] = {t.name: t for t in (
    #    name          condition     labels targets draws  restores pairs
    Task("synthesis", "", False, False, False, False, False, "noise -> image volume"),
    Task("joint", "", True, False, True, False, True, "noise -> image + label map pair"),
    Task("label2image", "labels", True, False, False, False, True, "label map -> image"),
    Task("translate", "image", False, True, False, False, False, "modality A -> modality B"),
    Task("denoise", "image", False, False, False, True, False, "noisy image -> clean image",
         uniform_crops=True),
    Task("superres", "image", False, False, False, True, False, "thick voxels -> thin voxels"),
    Task("inpaint", "image+mask", False, False, False, True, False,
         "image with a masked region -> the region filled"),
)}

#: model family (``ModelConfig.name``) -> the tasks it serves, its default first. The same
#: dict is ``napari_medgan.config.MODEL_TASKS``; :func:`register_family` adds to it.
FAMILIES: dict[str, tuple[str, ...]] = {
    # the built-in families, so that the config can be checked without importing torch;
    # napari_medgan.models registers the same tuples from the families' own TASKS
    "dcgan3d": ("synthesis", "joint"),
    "hagan3d": ("synthesis", "joint"),
    "pix2pix3d": ("label2image", "translate", "denoise", "superres", "inpaint"),
    "twostage3d": ("joint",),
}

#: Tasks whose generator takes a condition.
CONDITIONAL_TASKS: tuple[str, ...] = tuple(n for n, t in TASKS.items() if t.conditional)
#: Tasks that train on label maps.
LABEL_TASKS: tuple[str, ...] = tuple(n for n, t in TASKS.items() if t.needs_labels)


def register_family(name: str, tasks: tuple[str, ...]) -> None:
    """Declare that family ``name`` serves ``tasks`` (registered ones, its default first);
    :func:`napari_medgan.models.register_model` calls this with the family's module."""
    unknown = [t for t in tasks if t not in TASKS]
    if not tasks or unknown:
        raise ValueError(f"{name}: tasks must be registered tasks, got {tuple(tasks)!r}")
    FAMILIES[name] = tuple(tasks)


def families_of(task: str) -> tuple[str, ...]:
    """The families that serve ``task``."""
    return tuple(f for f, tasks in FAMILIES.items() if task in tasks)


def get_task(name: str) -> Task:
    """The record of task ``name``; ValueError naming the known tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"model.task: expected one of {tuple(TASKS)}, got {name!r}") from None


#: Why a model's results cannot be exported as a segmentation dataset.
NOT_PAIRS = ("export-dataset needs image + label pairs: a joint model (dcgan3d, hagan3d, "
             "twostage3d) or a label2image model (pix2pix3d)")
