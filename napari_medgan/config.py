"""Run configuration: data, model and training settings, with a YAML round trip.

Every field has a default, and every dataclass validates itself in
``__post_init__`` with a :class:`ValueError` naming the field and the bad value.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_medgan.tasks import FAMILIES, TASKS

#: model name -> tasks it supports (the first is the default): the task registry's families.
MODEL_TASKS: dict[str, tuple[str, ...]] = FAMILIES
#: Default share of training crops centred on tissue (``DataConfig.crop_fraction``).
TISSUE_CROPS = 0.8
PRESETS = ("ct", "mr", "zscore", "none")
LOSSES = ("bce", "hinge", "lsgan")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NOISE_KINDS = ("gaussian", "rician")
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")
SWITCHES = ("auto", "on", "off")
#: Largest edge (voxels) of a patch, slab or generated volume: beyond any scanner's matrix.
MAX_EDGE = 1024


def opt(default: Any, help: str, flag: str | None = None) -> Any:
    """A field that is also a ``napari-medgan train`` flag: ``--<flag or name>`` with this
    help text (:func:`train_flags`); the one place each setting is declared."""
    return field(default=default, metadata={"help": help, "flag": flag})


def parse_shape(value: Any, name: str, multiple: int) -> tuple[int, int, int]:
    """Three voxel counts (x, y, z) from ``"192,224,192"``, ``"192x224x192"``, one int (a
    cube) or a sequence, each a positive multiple of ``multiple``; ValueError naming
    ``name`` otherwise."""
    items = value
    if isinstance(value, str):
        items = value.lower().replace("x", ",").replace(" ", "").split(",")
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value] * 3
    def whole(v: Any) -> bool:
        return (isinstance(v, int) and not isinstance(v, bool)) or \
            (isinstance(v, str) and v.isdigit())

    ok = isinstance(items, (list, tuple)) and len(items) == 3 and all(map(whole, items))
    shape = tuple(int(v) for v in items) if ok else ()
    _check(ok and all(multiple <= s <= MAX_EDGE and s % multiple == 0 for s in shape), name,
           value, f"three sizes x,y,z in voxels, each a multiple of {multiple} up to {MAX_EDGE}")
    return shape  # type: ignore[return-value]


class _Checked:
    """Base of the config sections: a field changed after construction is validated
    again, with the whole section's rules (``__post_init__``), before it is kept; a bad
    value raises the same one-line ValueError as a bad config file and leaves the object
    as it was. Change fields that must agree (``model.name`` and ``model.task``) together
    with :func:`dataclasses.replace`."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not self.__dict__.get("_validated") or name not in self.__dataclass_fields__:
            object.__setattr__(self, name, value)
            return
        checked = dataclasses.replace(self, **{name: value})  # runs __post_init__
        object.__setattr__(self, name, getattr(checked, name))  # its normalised value

    def _ready(self) -> None:
        """Called at the end of ``__post_init__``: from now on changes are checked."""
        object.__setattr__(self, "_validated", True)

    def _coerce(self, section: str) -> None:
        """Called first in ``__post_init__``: every int, float, bool and str field (or its
        ``| None`` form) gets a value of its type, or a one-line ValueError naming the field
        -- so a checkpoint or YAML file with ``patch_size: "abc"`` or ``channels: [1]`` is
        refused by name, before any rule (or network) sees the value."""
        for name, kind in _scalar_fields(type(self)).items():
            value = getattr(self, name)
            if value is None and kind[1]:
                continue
            object.__setattr__(self, name, _scalar(value, kind[0], f"{section}.{name}"))


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, ``(None, True)`` for a wider union, ``(hint, False)``
    otherwise."""
    import types
    import typing

    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return hint, False
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return (args[0] if len(args) == 1 else None), True


@functools.lru_cache(maxsize=None)
def _scalar_fields(cls: type) -> dict[str, tuple[type, bool]]:
    """Field name -> (int | float | bool | str, may be None) for a config section."""
    import typing

    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        hint, optional = _unwrap_optional(hint)
        if hint in (int, float, bool, str) and name in cls.__dataclass_fields__:
            out[name] = (hint, optional)
    return out


def _scalar(value: Any, kind: type, name: str) -> Any:
    """``value`` as ``kind``; ValueError naming ``name`` when it is not one."""
    import math

    if kind is bool:
        _check(isinstance(value, bool), name, value, "true or false")
        return value
    if kind is str:
        _check(isinstance(value, str), name, value, "text")
        return value
    number: Any = None
    if isinstance(value, str):
        try:
            number = int(value.strip()) if kind is int else float(value.strip())
        except ValueError:
            number = None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = value
    if kind is int:
        ok = number is not None and (isinstance(number, int) or (
            math.isfinite(number) and float(number).is_integer()))
        _check(ok, name, value, "a whole number")
        return int(number)
    _check(number is not None and math.isfinite(float(number)), name, value, "a finite number")
    return float(number)


def _check(cond: bool, name: str, value: Any, expected: str) -> None:
    if not cond:
        raise ValueError(f"{name}: expected {expected}, got {brief(value)}")


def brief(value: Any) -> str:
    """A short repr for messages, bounded however large or deep ``value`` is (a YAML alias
    bomb expands to billions of items; its full repr would never finish)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, 60, 60
    return short.repr(value)


@dataclass
class DataConfig(_Checked):
    """Where training volumes come from and how they are normalised.

    ``source`` is ``"phantom"`` (the built-in head-phantom distribution), a
    folder of volumes, or a single volume file. ``labels`` is a folder/file of
    matching label maps (joint synthesis, label2image); ``target`` a folder/file
    of paired target volumes (translate). ``flip``: conditional tasks flip each
    training pair along every axis with probability 1/2; superres, denoise and
    inpaint also permute the axes that share a voxel spacing.
    ``val_fraction``: conditional tasks hold out a slab of this fraction of an
    axis (the end of the longest axis, or the face with the most tissue when
    that end is mostly air; up to four volumes) from training and keep the
    generator that does best there (see ``train.val_every``); 0 = off.
    ``foreground_fraction``: share of training crops centred on a tissue voxel,
    the rest uniform over the volume; None takes :meth:`crop_fraction`.
    """

    source: str = opt("phantom", "'phantom', a folder of volumes, or a volume file", flag="data")
    labels: str | None = opt(None, 'folder/file of label maps matching --data')
    target: str | None = opt(None, 'folder/file of paired target volumes (translate)')
    preset: str = opt("mr", 'intensity preset: ct | mr | zscore | none')
    target_preset: str | None = opt(None, 'intensity preset of --target volumes')
    spacing: tuple[float, float, float] | None = None
    phantom_count: int = opt(24, 'number of phantom volumes')
    phantom_size: int = opt(48, 'phantom grid edge in voxels')
    phantom_modality: str = opt("mr", 'phantom contrast: mr | ct')
    foreground_fraction: float | None = None
    flip: bool = True
    val_fraction: float = opt(0.15, "conditional tasks: fraction of an axis held out as a "
                              "slab (the end of the longest axis, or the face with the most "
                              "tissue when that end is mostly air) to keep the best "
                              "generator (0 = off)")

    def __post_init__(self) -> None:
        self._coerce("data")
        _check(isinstance(self.source, str) and bool(self.source), "data.source", self.source,
               "'phantom', a folder or a file")
        _check(self.preset in PRESETS, "data.preset", self.preset, f"one of {PRESETS}")
        _check(self.target_preset is None or self.target_preset in PRESETS, "data.target_preset",
               self.target_preset, f"one of {PRESETS} or null")
        if self.spacing is not None:
            sp = tuple(float(s) for s in self.spacing)
            _check(len(sp) == 3 and all(s > 0 for s in sp), "data.spacing", self.spacing,
                   "three positive numbers (mm)")
            self.spacing = sp
        _check(1 <= self.phantom_count <= 1000, "data.phantom_count", self.phantom_count,
               "from 1 to 1000")
        _check(16 <= self.phantom_size <= 256, "data.phantom_size", self.phantom_size,
               "from 16 to 256")
        _check(self.phantom_modality in ("mr", "ct"), "data.phantom_modality",
               self.phantom_modality, "'mr' or 'ct'")
        uniform = ", ".join(t.name for t in TASKS.values() if t.uniform_crops)
        _check(self.foreground_fraction is None or 0.0 <= float(self.foreground_fraction) <= 1.0,
               "data.foreground_fraction", self.foreground_fraction,
               f"a number in [0, 1], or null ({TISSUE_CROPS}; 0 for {uniform})")
        _check(0.0 <= float(self.val_fraction) <= 0.5, "data.val_fraction", self.val_fraction,
               "a number in [0, 0.5] (0 = no validation)")
        self._ready()

    def crop_fraction(self, task: str) -> float:
        """``foreground_fraction``, or by default 0.8 (nnU-Net's oversampling of tissue),
        and 0 for tasks whose degradation is in every voxel (denoise: a denoiser trained on
        tissue crops leaves the air noisy)."""
        if self.foreground_fraction is not None:
            return float(self.foreground_fraction)
        return 0.0 if TASKS[task].uniform_crops else TISSUE_CROPS


@dataclass
class ModelConfig(_Checked):
    """Architecture. Stored in every checkpoint; on resume it comes from there.

    ``superres_factors``: thick/thin voxel ratio per axis, ITK (x, y, z) order,
    each 1, 2 or 4 (``2`` = isotropic x2, ``(1, 1, 4)`` = through-plane x4).
    ``noise`` / ``noise_std``: the noise a denoising model is trained for
    (``"gaussian"`` or ``"rician"``; sigma in normalised units, 0.5-1.5x drawn).
    ``inpaint_fraction``: training holes are boxes of about this fraction of each side.
    """

    name: str = opt("dcgan3d", 'dcgan3d (unconditional patches), hagan3d (unconditional whole '
                    'volumes, hierarchical), twostage3d (label map, then image from it) or '
                    'pix2pix3d (conditional)', flag="model")
    task: str | None = opt(None, "dcgan3d, hagan3d: synthesis | joint (image + label map); "
                                 "twostage3d: joint; pix2pix3d: label2image | translate | "
                                 "denoise | superres | inpaint")
    patch_size: int = opt(32, 'cubic patch edge in voxels (multiple of 16)')
    volume_shape: tuple[int, int, int] | None = opt(
        None, "hagan3d: size of the whole volume it generates, voxels x,y,z (e.g. 192,224,192), "
              "each a multiple of 32 (default: the patch size cubed)")
    slab_size: int = opt(32, "hagan3d: thickness (z voxels, a multiple of 8) of the "
                             "full-resolution slab each step trains")
    label_scale: int = opt(1, "twostage3d: stage 1 draws the label map at 1/this of the "
                              "patch side (1 or 2), and its class probabilities are upsampled "
                              "(trilinear) to the patch before stage 2 draws the image")
    latent_dim: int = opt(128, 'latent size (dcgan3d, hagan3d, twostage3d)')
    channels: int = opt(32, 'base network width')
    num_classes: int = opt(0, 'label classes incl. background (0 = from data)')
    spectral_norm: bool = True
    superres_factors: tuple[int, int, int] = opt(
        (2, 2, 2), "superres: thick/thin voxel ratio per axis (x, y, z), e.g. 2 (isotropic "
                   "x2), 4, or 1x1x4 (4 mm slices -> 1 mm); each 1, 2 or 4")
    inpaint_fraction: float = 0.35
    noise: str = opt("gaussian", 'denoise: noise the model is trained for: gaussian | rician')
    noise_std: float = opt(0.1, "denoise: typical noise standard deviation in normalised "
                                "units (the preset maps the intensity range to about [-1, 1]); "
                                "training draws 0.5-1.5x this")

    def __post_init__(self) -> None:
        self._coerce("model")
        _check(self.name in MODEL_TASKS, "model.name", self.name, f"one of {tuple(MODEL_TASKS)}")
        if self.task is None:
            self.task = MODEL_TASKS[self.name][0]
        _check(self.task in MODEL_TASKS[self.name], "model.task", self.task,
               f"one of {MODEL_TASKS[self.name]} for model {self.name!r}")
        ps = self.patch_size
        _check(16 <= ps <= MAX_EDGE and ps % 16 == 0, "model.patch_size", ps,
               f"a multiple of 16 from 16 to {MAX_EDGE}")
        if self.volume_shape is not None:
            self.volume_shape = parse_shape(self.volume_shape, "model.volume_shape", 32)
        _check(8 <= self.slab_size <= MAX_EDGE and self.slab_size % 8 == 0, "model.slab_size",
               self.slab_size, f"a multiple of 8 from 8 to {MAX_EDGE}")
        _check(self.label_scale in (1, 2), "model.label_scale", self.label_scale, "1 or 2")
        if self.label_scale != 1:
            _check(self.name == "twostage3d", "model.label_scale", self.label_scale,
                   "1 for models other than twostage3d")
            _check(ps // self.label_scale % 16 == 0, "model.label_scale", self.label_scale,
                   f"a divisor of the patch size ({ps}) that leaves a multiple of 16")
        _check(1 <= self.latent_dim <= 4096, "model.latent_dim", self.latent_dim,
               "from 1 to 4096")
        _check(4 <= self.channels <= 1024, "model.channels", self.channels, "from 4 to 1024")
        _check(0 <= self.num_classes <= 256, "model.num_classes", self.num_classes,
               "from 0 (from the data) to 256")
        if TASKS[self.task].needs_labels:
            _check(int(self.num_classes) != 1, "model.num_classes", self.num_classes,
                   f"0 (from the data) or >= 2 (background + labels) for task {self.task!r}")
        from napari_medgan.data.superres import parse_factors

        self.superres_factors = parse_factors(self.superres_factors)  # 1, 2 or 4: divide ps
        _check(0.0 < float(self.inpaint_fraction) < 1.0, "model.inpaint_fraction",
               self.inpaint_fraction, "a number in (0, 1)")
        _check(self.noise in NOISE_KINDS, "model.noise", self.noise, f"one of {NOISE_KINDS}")
        _check(float(self.noise_std) > 0.0, "model.noise_std", self.noise_std,
               "> 0 (normalised units: the intensity range maps to about [-1, 1])")
        self._ready()

    @property
    def conditional(self) -> bool:
        return TASKS[self.task].conditional


@dataclass
class TrainConfig(_Checked):
    """Optimisation and run-control settings.

    ``val_every``: conditional tasks score the EMA generator on the held-out
    slab (``data.val_fraction``) at step 0 and every ``val_every`` steps, and
    the final checkpoint keeps the best-scoring generator (early stopping:
    small medical datasets are overfitted within minutes), unless it beat the
    start by no more than the slab's noise (``trainer.paired_gain``).
    """

    steps: int = opt(2000, 'optimisation steps in total')
    batch_size: int = opt(4, 'batch size per process')
    lr_g: float = opt(2e-4, 'generator learning rate')
    lr_d: float = opt(4e-4, 'discriminator learning rate (TTUR)')
    beta1: float = 0.5
    beta2: float = 0.999
    loss: str = opt("bce", 'bce (non-saturating, default) | hinge | lsgan')
    r1_gamma: float = opt(1.0, 'R1 penalty weight (0 = off)')
    r1_every: int = 4
    ema_decay: float = 0.999
    augment: bool = True
    augment_p: float = 0.6
    l1_weight: float = opt(100.0, "L1 weight for pix2pix3d and twostage3d's image stage")
    fm_weight: float = opt(10.0, "feature-matching weight for pix2pix3d and twostage3d's image "
                                 "stage (pix2pixHD; 0 = off)")
    grad_clip: float = 10.0
    device: str = opt("auto", 'auto | cpu | cuda | cuda:N | mps')
    precision: str = opt("auto", 'auto | fp32 | bf16 | fp16')
    seed: int = opt(0, 'random seed (a CPU run is repeatable)')
    log_every: int = opt(10, 'steps between log lines')
    preview_every: int = opt(50, 'steps between previews')
    preview_count: int = 2
    checkpoint_every: int = opt(500, 'steps between checkpoints')
    keep_last: int = 3
    max_divergences: int = 3
    num_workers: int = 0
    val_every: int = opt(100, 'steps between validation scores')
    memory_format: str = opt("auto", "auto (a GPU run times both at its start and keeps the "
                             "faster) | contiguous | channels_last (channels_last_3d)")
    compile: str = opt("auto", "torch.compile the generator: auto (a GPU run of 2000+ steps "
                       "measures it, compile time included) | on | off")
    grad_checkpoint: str = opt("off", "on: recompute the generator's activations during the "
                               "backward pass (less memory for the largest sizes, slower)")
    memory_check: str = opt("on", "on: before training, estimate the step's peak memory "
                            "from two small measured steps and refuse a run that cannot fit "
                            "| off")
    keep_host_memory: str = opt("auto", "on: the training process keeps the memory its "
                                "tensors free for the next step instead of handing it back to "
                                "the system each time (Linux, glibc; fewer page faults: a "
                                "faster CPU step, about a third more peak RAM) | off | auto "
                                "(on for CPU runs)")

    def __post_init__(self) -> None:
        self._coerce("train")
        _check(1 <= self.steps <= 10**9, "train.steps", self.steps, "from 1 to 10^9")
        _check(1 <= self.batch_size <= 4096, "train.batch_size", self.batch_size,
               "from 1 to 4096")
        for name in ("lr_g", "lr_d"):
            value = getattr(self, name)
            _check(0 < float(value) < 1, f"train.{name}", value, "a learning rate in (0, 1)")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            _check(0 <= float(value) < 1, f"train.{name}", value, "a number in [0, 1)")
        _check(self.loss in LOSSES, "train.loss", self.loss, f"one of {LOSSES}")
        _check(float(self.r1_gamma) >= 0, "train.r1_gamma", self.r1_gamma, ">= 0")
        _check(int(self.r1_every) >= 1, "train.r1_every", self.r1_every, ">= 1")
        _check(0 <= float(self.ema_decay) < 1, "train.ema_decay", self.ema_decay, "in [0, 1)")
        _check(0 <= float(self.augment_p) <= 1, "train.augment_p", self.augment_p, "in [0, 1]")
        _check(float(self.l1_weight) >= 0, "train.l1_weight", self.l1_weight, ">= 0")
        _check(float(self.fm_weight) >= 0, "train.fm_weight", self.fm_weight, ">= 0")
        _check(float(self.grad_clip) >= 0, "train.grad_clip", self.grad_clip, ">= 0 (0 = off)")
        _check(isinstance(self.device, str) and (
            self.device in ("auto", "cpu", "mps") or self.device.startswith("cuda")),
            "train.device", self.device, "'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'")
        _check(self.precision in PRECISIONS, "train.precision", self.precision,
               f"one of {PRECISIONS}")
        for name in ("log_every", "preview_every", "checkpoint_every", "keep_last",
                     "max_divergences", "val_every"):
            value = getattr(self, name)
            _check(int(value) >= 1, f"train.{name}", value, ">= 1")
        _check(int(self.preview_count) >= 1, "train.preview_count", self.preview_count, ">= 1")
        _check(int(self.num_workers) >= 0, "train.num_workers", self.num_workers, ">= 0")
        for name, choices in (("memory_format", MEMORY_FORMATS), ("compile", SWITCHES),
                              ("grad_checkpoint", SWITCHES[1:]),
                              ("memory_check", SWITCHES[1:]), ("keep_host_memory", SWITCHES)):
            value = getattr(self, name)
            _check(value in choices, f"train.{name}", value, f"one of {choices}")
        self._ready()


@dataclass
class RunConfig:
    """Everything a training run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = opt("runs/medgan", "run folder: config.yaml, training record, checkpoints; a "
                   "folder that already holds a run is refused unless resumed")
    init: str | None = opt(None, "fine-tune from this checkpoint, run folder or model bundle "
                                 "(the architecture comes from it, the optimisers start fresh)")
    resume: bool = opt(False, "continue the interrupted run in the run folder from its last "
                              "checkpoint (optimiser and random state included)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "RunConfig":
        """Build from a nested dict, rejecting unknown keys with a clear message."""
        if not isinstance(raw, dict):
            raise ValueError(f"config: expected a mapping, got {type(raw).__name__}")
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key in sections:
                kwargs[key] = _build(sections[key], value or {}, key)
            elif key in ("out", "init"):
                _check(isinstance(value, str) and bool(value) or (key == "init" and value is None),
                       f"config.{key}", value, "a folder path" + (" or null" if key == "init"
                                                                  else ""))
                kwargs[key] = value
            elif key == "resume":
                _check(isinstance(value, bool), "config.resume", value, "true or false")
                kwargs[key] = value
            else:
                raise ValueError(f"config: unknown section {key!r} (expected data, model, train, "
                                 "out, init, resume)")
        return cls(**kwargs)

    def to_yaml(self, path: str | Path) -> None:
        import yaml

        from napari_medgan.io.atomic import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a text file (a YAML config is UTF-8 text)") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
        except RecursionError:
            raise ValueError(f"{path}: not a config: nested too deeply") from None
        try:
            return cls.from_dict(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None
        except RecursionError:
            raise ValueError(f"{path}: not a config: nested too deeply") from None


def _build(kind: type, values: dict, section: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"config.{section}: expected a mapping, got {values!r}")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"config.{section}: unknown field(s) {unknown}; known: {sorted(names)}")
    values = dict(values)
    for key in ("spacing", "superres_factors", "volume_shape"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return kind(**values)


#: RunConfig section -> its dataclass.
SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}

#: Sampling settings: the help of ``napari-medgan generate``'s options and the tooltips of
#: the Synthesize & Compare dock (declared here once, like the run settings above).
SAMPLING_HELP = {
    "checkpoint": "run folder, checkpoint folder or model bundle (folder or .zip)",
    "n": "number of volumes to draw (unconditional models)",
    "seed": "sampling seed: the same seed gives the same volumes",
    "condition": "input of a conditional model: a label map (label2image) or an image "
                 "(translate, denoise, superres, inpaint); for a two-stage pair model "
                 "(twostage3d), a label map to draw the image for",
    "mask": "inpainting mask: non-zero voxels are filled in",
    "reference": "real volume whose spacing, direction and centre the samples take",
    "flip_ensemble": "conditional models: average the results for the 8 flips of the input "
                     "(self-ensemble: closer to the truth, 8x the time)",
}


def train_flags() -> list[tuple[str, str, str, type, str]]:
    """``(section, field, flag dest, type, help)`` for every field declared with :func:`opt`,
    in declaration order: the ``napari-medgan train`` flags, derived, never hand-copied.
    A flag's value goes through the same validation as a config file's."""
    import typing

    out = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if "help" not in f.metadata:
                continue
            hint = _unwrap_optional(hints[f.name])[0]  # X | None: X
            kind = hint if hint in (int, float) else str  # tuples, names: parsed by the field
            out.append((section, f.name, f.metadata["flag"] or f.name, kind, f.metadata["help"]))
    return out


def field_help(section: str, name: str) -> str:
    """The help text of field ``section.name`` (its CLI ``--help`` line; widget tooltips);
    section ``"run"`` is :class:`RunConfig`'s own fields (``out``, ``init``, ``resume``)."""
    for f in dataclasses.fields(RunConfig if section == "run" else SECTIONS[section]):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(f"{section}.{name}: no such config field")
