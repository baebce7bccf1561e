"""Memory planner: will this run fit, before it allocates anything large?

The estimate of one training step's peak memory is made from measurements, not from a
formula alone:

1. **State** (exact): the parameters of the generator and discriminator at the target size,
   counted on the meta device (no memory), times what training keeps per parameter: the
   weights, their gradients and Adam's two moments, plus the EMA generator; on the CPU also
   the divergence guard's snapshot (weights and optimiser state copied to host memory).
2. **Batch** (exact): the training batch, about three float32 copies of it on the host
   while it is cut and converted, one on a GPU.
3. **Activations** (measured): the run's own training step (:class:`Trainer`, same family,
   task, width, precision, memory format, gradient checkpointing) at the two largest sizes
   within :data:`MEASURE_LIMIT` (:data:`SCALES`) with the run's batch up to 2, in a fresh
   process on the same device: peak RSS on the CPU (``/proc/self/status`` VmHWM),
   ``torch.cuda.max_memory_allocated`` on a GPU. Minus the state and batch at those sizes,
   the rest is fitted as ``a + b * voxels`` (``voxels``: what the step processes,
   :func:`memory_voxels`) and scaled to the target size and batch.
4. **Data** (exact, CPU only): the training volumes held in memory.

``benchmarks/memory.py`` checks the estimate against the measured peak of the real step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from fractions import Fraction

import torch

#: Largest ``memory_voxels`` measured by the planner on each device kind: large enough that
#: the allocator's noise (tens of MB of RSS) is small against what is measured, small
#: enough that the measuring steps take seconds (a 128^3 DCGAN step: about 5 s on two CPU
#: cores).
MEASURE_LIMIT = {"cpu": 128**3, "cuda": 128**3}
GIB = 2**30
#: Label classes of the phantom the measuring steps train on (background included).
_PHANTOM_CLASSES = 8
#: Largest batch of the measuring steps (the run's own batch when smaller).
MEASURE_BATCH = 2
#: Scales the measuring steps may shrink a run by; the planner measures the two largest
#: sizes within :data:`MEASURE_LIMIT`. 4/3 is tried only when the run itself is too large
#: to measure (a 256^3 hierarchical run: 192^3 and 128^3, not 128^3 and 64^3). On a CPU
#: the peak RSS of a step at 64^3 moves by +-0.1 GB between runs, too much to fit a slope
#: through, and a slope from 128^3 to 192^3 extrapolates 2x, not 6x, to 256^3 (estimate /
#: measured 0.69 -> 1.13).
SCALES = (1, Fraction(4, 3), 2, 4, 8, 16, 32)


# ------------------------------------------------------------------ what a step processes
def memory_voxels(cfg) -> int:
    """The voxel count activation memory grows with: the family's own
    ``memory_voxels(cfg)`` when it has one (hagan3d: the slab plus the low-resolution
    volume), else the training patch."""
    from napari_medgan.models import get_model, patch_shape

    own = getattr(get_model(cfg.name), "memory_voxels", None)
    return int(own(cfg)) if own is not None else int(math.prod(patch_shape(cfg)))


def scaled_model(cfg, k: int | Fraction):
    """``cfg`` with every size divided by ``k`` (an integer or a fraction such as 4/3; patch
    size rounded down to a multiple of 16, volume shape to multiples of 32, slab size to a
    multiple of 8 and at most the depth, ``label_scale`` 1 where the patch no longer allows
    2), or None when what the step processes (:func:`memory_voxels`) cannot shrink."""
    def down(value: int, multiple: int) -> int:
        return max(multiple, int(Fraction(int(value)) / Fraction(k)) // multiple * multiple)

    changes = {"patch_size": down(cfg.patch_size, 16)}
    depth = changes["patch_size"]
    if cfg.volume_shape is not None:
        changes["volume_shape"] = tuple(down(s, 32) for s in cfg.volume_shape)
        depth = changes["volume_shape"][2]
    changes["slab_size"] = min(down(cfg.slab_size, 8), depth)
    if changes["patch_size"] // int(cfg.label_scale) % 16:
        changes["label_scale"] = 1  # twostage3d's coarse grid cannot shrink that far: the
        # small step then does more stage-1 work, so the estimate errs on the safe side
    smaller = dataclasses.replace(cfg, **changes)
    return None if memory_voxels(smaller) == memory_voxels(cfg) else smaller


def state_bytes(cfg, device_type: str) -> int:
    """Bytes training keeps per run for ``cfg``'s networks (see the module docstring):
    generator x5 (weights, gradients, two Adam moments, EMA), discriminator x4, and on the
    CPU the divergence snapshot (generator x4: weights, EMA, moments; discriminator x3)."""
    from napari_medgan.models import build_discriminator, build_generator, on_meta_device

    with on_meta_device():
        g = sum(p.numel() for p in build_generator(cfg).parameters())
        d = sum(p.numel() for p in build_discriminator(cfg).parameters())
    per_g, per_d = (9, 7) if device_type == "cpu" else (5, 4)
    return 4 * (per_g * g + per_d * d)


def batch_bytes(cfg, batch: int, device_type: str) -> int:
    """Bytes of the training batch itself (exact sizes, counted apart from the fit because
    it grows with the whole sample, not with what the step computes): about three float32
    copies on the host while a batch is cut, stacked and converted, one on a GPU."""
    from napari_medgan.models import channels_for, patch_shape

    cond, out = channels_for(cfg)
    channels = out + (cond if cfg.conditional else 0)
    copies = 3 if device_type == "cpu" else 1
    return int(copies * 4 * channels * batch * math.prod(patch_shape(cfg)))


# ------------------------------------------------------------------ process memory
def status_bytes(field_name: str) -> int | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in bytes, or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def available_bytes(device: torch.device) -> tuple[int, str]:
    """Memory a run can still use, and what it is: free GPU memory, or MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {torch.cuda.get_device_name(device)}"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available RAM"
    except OSError:
        pass
    return 0, "available RAM (unknown here)"


# ------------------------------------------------------------------ measuring
def _release_host_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc ``malloc_trim``), so that
    RSS before a measurement is what is really held."""
    import gc

    from napari_medgan.training.device import trim_host_memory

    gc.collect()
    trim_host_memory()


def _one_measurement(run_dict: dict, device: str) -> int:
    from napari_medgan.config import RunConfig
    from napari_medgan.training.trainer import Trainer

    cuda = device.startswith("cuda")
    if cuda:
        dev = torch.device(device)
        torch.zeros(1, device=dev)  # the allocator's statistics need an initialised device
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        _release_host_memory()
        base = status_bytes("VmRSS") or 0
        reset_peak_rss()
    trainer = Trainer(RunConfig.from_dict(run_dict), write=False)
    for _ in trainer._setup():
        pass
    # the steps' peak, over what setup left allocated (networks, data), not setup's own
    # passing peak (building the data)
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        reset_peak_rss()
    for _ in range(2):  # the second step has Adam's moments and every lazy buffer
        trainer._train_step()
    if cuda:
        torch.cuda.synchronize(dev)
        peak = int(torch.cuda.max_memory_allocated(dev) - base)
    else:
        peak = int((status_bytes("VmHWM") or 0) - base)
    del trainer
    return peak


def measure_steps(run_dicts: list[dict], device: str) -> list[int]:
    """Peak bytes of two training steps of a Trainer set up for each of ``run_dicts``,
    counted from before the setup (so the networks, optimiser state and data are in), in
    this process (the planner runs it in a fresh one): RSS growth on the CPU, allocated
    memory on a GPU. The first run goes once unmeasured first, so that what
    loads once (modules, kernels, caches) is not counted as the step's."""
    _one_measurement(run_dicts[0], device)
    return [_one_measurement(r, device) for r in run_dicts]


def _measuring_run(run, model) -> dict:
    """The run used to measure ``model``: the run's batch up to :data:`MEASURE_BATCH`, two
    steps, phantom data just large enough, nothing written, no validation, no speed
    trials, no planning."""
    from napari_medgan.models import patch_shape

    raw = run.to_dict()
    raw["model"] = dataclasses.asdict(model)
    if raw["model"]["num_classes"]:  # the phantom's own classes: at most a few channels more
        raw["model"]["num_classes"] = max(raw["model"]["num_classes"], _PHANTOM_CLASSES)
    raw["data"].update(source="phantom", labels=None, target=None, phantom_count=1,
                       phantom_size=max(patch_shape(model)), spacing=None, val_fraction=0.0)
    t = raw["train"]
    t.update(batch_size=min(int(t["batch_size"]), MEASURE_BATCH), steps=2, memory_check="off",
             compile="off",
             memory_format="contiguous" if t["memory_format"] == "auto" else t["memory_format"],
             preview_every=10**6, checkpoint_every=10**6, val_every=10**6, log_every=10**6)
    raw.update(out=os.devnull, resume=False, init=None)
    return raw


def _measure_in_subprocess(runs: list[dict], device: str) -> list[int]:
    # at a lower priority: it is background work, and on a 2-core machine it otherwise takes
    # the core napari's GUI thread needs (a 48 ms stall while the Train dock's run set up)
    code = ("import os\n"
            "if hasattr(os, 'nice'):\n"
            "    os.nice(10)\n"
            "import json, sys, torch\n"
            "from napari_medgan.training.memory import measure_steps\n"
            "torch.set_num_threads(int(sys.argv[2]))\n"
            "runs = json.loads(sys.argv[1])\n"
            "print('PEAKS ' + json.dumps(measure_steps(runs, sys.argv[3])))\n")
    env = {**os.environ, "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(runs),
                           str(torch.get_num_threads()), device],
                          capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("PEAKS "):
            return [int(v) for v in json.loads(line[6:])]
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"memory: the measuring steps failed ({tail[:300]})")


def format_bytes(n: float) -> str:
    """``"3.1 GB"``, ``"420 MB"`` (binary units, as the planner measures)."""
    return f"{n / GIB:.1f} GB" if abs(n) >= GIB else f"{n / 2**20:.0f} MB"


# ------------------------------------------------------------------ the plan
@dataclass
class MemoryPlan:
    """A run's estimated peak memory on its device and whether it fits.

    ``parts`` splits ``estimate`` (bytes) into state, activations and data; ``fit`` is
    ``(a, b)`` of activations ``a + b * voxels`` per sample; ``measured`` lists the
    measuring configurations with their voxels and peaks."""

    device: str
    available: int
    available_what: str
    estimate: int
    parts: dict[str, int]
    fit: tuple[float, float]
    batch_size: int
    measured: list[dict] = field(default_factory=list)
    advice: str = ""

    @property
    def fits(self) -> bool:
        return self.estimate <= 0.9 * self.available

    def summary(self) -> str:
        """``"memory: fits: ~3.1 GB of 20.5 GB available RAM (state 412 MB, activations
        2.6 GB, data 96 MB)"``, or the refusal line."""
        parts = ", ".join(f"{k} {format_bytes(v)}" for k, v in self.parts.items() if v)
        head = (f"~{format_bytes(self.estimate)} of {format_bytes(self.available)} "
                f"{self.available_what} ({parts})")
        if self.fits:
            return f"memory: fits: {head}"
        return f"memory: does not fit: needs {head}; {self.advice}"


def _estimate(cfg, fit, batch: int, device_type: str, data: int) -> dict[str, int]:
    a, b = fit
    return {"state": state_bytes(cfg, device_type),
            "activations": int(max(a, 0.0) + batch * b * memory_voxels(cfg)),
            "batch": batch_bytes(cfg, batch, device_type),
            "data": int(data)}


def plan_memory(run, device: torch.device, data_bytes: int = 0, processes: int = 1,
                available: int | None = None) -> MemoryPlan:
    """Estimate the peak memory of training ``run`` on ``device`` (see the module docstring).

    Parameters
    ----------
    run : RunConfig
        The run as it will train (its model config resolved: ``num_classes`` known).
    device : torch.device
        Where it trains.
    data_bytes : int
        Training volumes in host memory (counted on the CPU only).
    processes : int
        Training processes sharing this machine's RAM (CPU ``torchrun``).
    available : int, optional
        Memory to plan against instead of what the device reports now.
    """
    model, batch = run.model, int(run.train.batch_size)
    kind = "cuda" if device.type == "cuda" else "cpu"
    limit = MEASURE_LIMIT[kind]
    # a fractional scale only when the run itself is too large to measure
    scales = SCALES if memory_voxels(model) > limit else \
        [k for k in SCALES if Fraction(k).denominator == 1]
    sizes, seen = [], set()
    for k in scales:
        current = model if k == 1 else scaled_model(model, k)
        if current is None:
            break
        voxels = memory_voxels(current)
        if voxels <= limit and voxels not in seen:
            sizes.append(current)
        seen.add(voxels)
    sizes = sorted(sizes, key=memory_voxels, reverse=True)[:2][::-1]  # largest two, small first
    runs = [_measuring_run(run, m) for m in sizes]
    dev = f"cuda:{device.index or 0}" if kind == "cuda" else "cpu"
    peaks = _measure_in_subprocess(runs, dev)
    n = min(batch, MEASURE_BATCH)
    acts = [p - state_bytes(m, kind) - batch_bytes(m, n, kind) for p, m in zip(peaks, sizes)]
    vox = [memory_voxels(m) for m in sizes]
    if len(sizes) == 2 and vox[1] != vox[0]:  # per sample: acts = a + n * b * voxels
        b = max((acts[1] - acts[0]) / (n * (vox[1] - vox[0])), 0.0)
        a = acts[0] - n * b * vox[0]
    else:
        a, b = 0.0, max(acts[0], 0) / (n * vox[0])
    data = data_bytes if kind == "cpu" else 0
    parts = _estimate(model, (a, b), batch, kind, data)
    scale = processes if kind == "cpu" else 1
    parts = {k: v * scale for k, v in parts.items()}
    if available is None:
        available, what = available_bytes(device)
    else:
        what = "given"
    plan = MemoryPlan(str(device), int(available), what, sum(parts.values()), parts, (a, b),
                      batch, [{"model": dataclasses.asdict(m), "voxels": v, "peak": p}
                              for m, v, p in zip(sizes, vox, peaks)])
    if not plan.fits:
        plan.advice = _advice(model, (a, b), batch, kind, data, scale, 0.9 * available)
    return plan


def _advice(model, fit, batch: int, kind: str, data: int, scale: int, room: float) -> str:
    """The largest batch that fits; else the largest slab / patch / volume at batch 1."""
    def total(cfg, n: int) -> float:
        return scale * sum(_estimate(cfg, fit, n, kind, data).values())

    fitting = [n for n in range(batch - 1, 0, -1) if total(model, n) <= room]
    if fitting:
        return f"the largest train.batch_size that fits is {fitting[0]}"
    for name, multiple in (("slab_size", 8), ("patch_size", 16), ("volume_shape", 32)):
        value = getattr(model, name)
        if value is None:
            continue
        for k in (2, 4, 8, 16):
            if name == "volume_shape":
                smaller = tuple(max(multiple, v // k // multiple * multiple) for v in value)
            else:
                smaller = max(multiple, value // k // multiple * multiple)
            cfg = dataclasses.replace(model, **{name: smaller})
            if smaller == value or memory_voxels(cfg) == memory_voxels(model):
                break  # as small as it goes, or a size this family does not use
            if total(cfg, 1) <= room:
                shown = ",".join(map(str, smaller)) if isinstance(smaller, tuple) else smaller
                return (f"even train.batch_size 1 does not fit; the largest model.{name} that "
                        f"fits at batch 1 is {shown} (or set train.grad_checkpoint on)")
    return "even the smallest size does not fit at batch 1"
