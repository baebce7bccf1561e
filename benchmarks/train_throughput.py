"""Training throughput of the trainer's real step, per model family and size.

Each configuration builds the real :class:`napari_medgan.training.trainer.Trainer` on a
phantom of the patch size and times ``Trainer._train_step()``: the batch drawn from the
data, augmentation, the family's own step (D update with lazy R1, G update, EMA), exactly
as a run does, with the losses left on the device. The steps of whole R1 cycles (one step
in ``r1_every`` adds the R1 penalty) run back to back, as in the trainer's loop, with one
device synchronisation per cycle, so the host draws the next batch while the GPU works;
the mean step is reported (the median over cycles too). Reported: voxels/s;
FLOPs per step
counted by ``torch.utils.flop_counter`` on the eager step (averaged over ``r1_every``
steps, so R1's double backward is in at its real rate); achieved TFLOP/s against the GPU's
dense bf16 peak, or GFLOP/s against a float32 matrix multiply measured in the same run on
the CPU.

Variants, each a configuration of the trainer itself (``train.precision``,
``train.memory_format``, ``train.compile``):

* ``eager-fp32``: the baseline, PyTorch's defaults (on a GPU its convolutions run on TF32
  tensor cores);
* ``strict-fp32``: the same with TF32 turned off (``torch.backends.cudnn.allow_tf32``);
* ``channels_last``: fp32 with channels_last_3d (CPU);
* ``bf16``: bf16 autocast, contiguous;
* ``bf16+channels_last`` (GPU);
* ``+compile`` variants with ``--compile`` (the generator under ``torch.compile``);
* a ``+pageable`` suffix on any of them: the batch copied to the GPU from pageable host
  memory (``Trainer.pin_batches`` off), which waits for the GPU's queued work;
* a ``+release-host`` suffix: ``train.keep_host_memory`` off (freed host memory handed
  back to the system each time, glibc's default; the trainer keeps it on CPU runs).

``--layers`` adds, per configuration, where the convolutions' time goes: every 3D
convolution the step runs (generator and critic, with the input shape it saw in the step)
is timed on its own, forward and backward, in the variant's precision and memory format,
with its FLOPs and its share of the reference. It says which layers keep the step from the
hardware's peak.

Each configuration runs in its own subprocess, so peak memory is per configuration.

Usage::

    python benchmarks/train_throughput.py --quick              # CPU: a few minutes
    python benchmarks/train_throughput.py --device cuda --compile
    python benchmarks/train_throughput.py --families dcgan3d --sizes 32,64 --batch 32:8,64:2

Results are printed as a table and written to
``benchmarks/results/train_throughput-<hardware>-<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # run from a checkout without installing

# Batch sizes that fit: CPU keeps a step within tens of seconds, an 80+ GB GPU stays far
# from its memory limit (128^3 at width 32 needs ~2 GB of activations per sample).
BATCH = {"cpu": {32: 4, 64: 2, 128: 1}, "cuda": {32: 32, 64: 8, 128: 4}}
RESULT_TAG = "RESULT "
#: family -> (task, extra model settings); hagan3d's size is its whole volume
FAMILIES = {"dcgan3d": ("synthesis", {}), "pix2pix3d": ("label2image", {}),
            "hagan3d": ("synthesis", {"slab_size": 32}), "twostage3d": ("joint", {})}
VARIANTS = {
    "eager-fp32": dict(precision="fp32", memory_format="contiguous", compile="off"),
    # PyTorch runs fp32 convolutions on TF32 tensor cores by default
    # (torch.backends.cudnn.allow_tf32); this variant turns that off: true fp32 arithmetic
    "strict-fp32": dict(precision="fp32", memory_format="contiguous", compile="off"),
    "channels_last": dict(precision="fp32", memory_format="channels_last", compile="off"),
    "bf16": dict(precision="bf16", memory_format="contiguous", compile="off"),
    "bf16+channels_last": dict(precision="bf16", memory_format="channels_last", compile="off"),
    "fp32+compile": dict(precision="fp32", memory_format="contiguous", compile="on"),
    "bf16+channels_last+compile": dict(precision="bf16", memory_format="channels_last",
                                       compile="on"),
}
#: Dense bf16 tensor-core peak (FLOP/s) by GPU name fragment, from the vendors' data sheets.
BF16_PEAK = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12),
             ("L40S", 362e12), ("A10", 125e12), ("L4", 121e12))


def _settings_name(variant: str) -> str:
    """The trainer settings of ``variant``: without its ``+pageable`` suffix (the batch
    copied to the GPU from pageable memory, as before ``Trainer.pin_batches``) and its
    ``+release-host`` one (``train.keep_host_memory`` off)."""
    return variant.removesuffix("+pageable").removesuffix("+release-host")


def bf16_peak(gpu_name: str | None) -> float | None:
    for fragment, peak in BF16_PEAK:
        if gpu_name and fragment in gpu_name:
            return peak
    return None


# ----------------------------------------------------------------- worker
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainer(spec: dict):
    from napari_medgan.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from napari_medgan.training.trainer import Trainer

    size, family = int(spec["size"]), spec["family"]
    task, extra = FAMILIES[family]
    extra = dict(extra)
    if family == "hagan3d":
        extra.update(volume_shape=(size,) * 3, slab_size=min(extra["slab_size"], size))
    model = ModelConfig(name=family, task=task, patch_size=min(size, 128),
                        channels=int(spec["channels"]), **extra)
    run = RunConfig(
        data=DataConfig(source="phantom", phantom_count=1, phantom_size=size, val_fraction=0.0),
        model=model,
        train=TrainConfig(batch_size=int(spec["batch"]), device=spec["device"], steps=10**6,
                          memory_check="off", preview_every=10**6, checkpoint_every=10**6,
                          log_every=10**6, val_every=10**6,
                          keep_host_memory="off" if "+release-host" in spec["variant"]
                          else "auto", **VARIANTS[_settings_name(spec["variant"])]),
        out=os.devnull)
    trainer = Trainer(run, write=False)
    for _ in trainer._setup():
        pass
    return trainer


class FlopCount:
    """FLOPs of the matrix products and convolutions run inside it (forward, backward and
    R1's double backward alike), by ``torch.utils.flop_counter``'s formulas. Its
    ``FlopCounterMode`` also tracks modules, which fails inside ``autograd.grad`` (R1);
    this dispatch mode only counts."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        outer = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                formula = flop_registry.get(func._overloadpacket)
                if formula is not None:
                    outer.total += int(formula(*args, **kwargs, out_val=out))
                return out

        self.total = 0
        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


def run_config(spec: dict) -> dict:
    """Time the trainer's real step for one (family, size, batch, variant) in this process."""
    import torch

    device = torch.device(spec["device"])
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    torch.backends.cudnn.allow_tf32 = spec["variant"] != "strict-fp32"
    from napari_medgan.training.memory import reset_peak_rss, status_bytes

    peak_reset = reset_peak_rss() if device.type == "cpu" else False
    rss0 = status_bytes("VmRSS") if device.type == "cpu" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        mem0 = torch.cuda.memory_allocated(device)
    trainer = _trainer(spec)
    trainer.pin_batches = "+pageable" not in spec["variant"]
    r1_every = trainer.config.train.r1_every

    def step() -> None:
        trainer._train_step()
        trainer.step += 1  # lazy R1 at its real rate

    flops = None
    if spec.get("count_flops"):
        step()  # warm (lazy buffers) outside the count
        with FlopCount() as counter:
            for _ in range(r1_every):
                step()
        flops = counter.total / r1_every

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for _ in range(int(spec["warmup"])):
        step()
    _sync(device)
    # whole R1 cycles, so the mean carries R1's double backward at its real rate; the steps
    # of a cycle run back to back as in the trainer's loop (which reads the device only at
    # log intervals), so drawing the next batch on the host overlaps the GPU's work
    times = []
    t_start = time.perf_counter()
    for _ in range(max(1, -(-int(spec["steps"]) // r1_every))):
        t0 = time.perf_counter()
        for _ in range(r1_every):
            step()
        _sync(device)
        times.append((time.perf_counter() - t0) / r1_every)
    wall = time.perf_counter() - t_start

    if device.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated(device) - mem0) / 2**20
    else:
        hwm = status_bytes("VmHWM")
        peak_mib = (hwm - rss0) / 2**20 if hwm is not None and rss0 is not None else None
    median, mean = statistics.median(times), statistics.fmean(times)
    # compiled variants run the same convolution kernels; their hooks would recompile
    layers = conv_layers(trainer) if spec.get("layers") and "compile" not in \
        spec["variant"] else None
    settings = VARIANTS[_settings_name(spec["variant"])]
    voxels = spec["batch"] * spec["size"] ** 3
    if spec["family"] == "hagan3d":  # a step computes the low-res volume and one slab
        from napari_medgan.training.memory import memory_voxels

        voxels = spec["batch"] * memory_voxels(trainer.config.model)
    return {
        "family": spec["family"], "size": spec["size"], "batch": spec["batch"],
        "variant": spec["variant"],
        "amp_dtype": "fp32" if trainer.amp_dtype is None else str(trainer.amp_dtype)[6:],
        "memory_format": settings["memory_format"], "compile": settings["compile"] == "on",
        "cudnn_benchmark": device.type == "cuda",
        "keep_host_memory": bool(trainer._kept_host_memory),
        "tf32_convolutions": device.type == "cuda" and torch.backends.cudnn.allow_tf32,
        "step_s_mean": round(mean, 4), "step_s_median": round(median, 4),
        "step_s_per_cycle": [round(t, 4) for t in times],
        "voxels_per_s": round(voxels / mean, 1),
        "flops_per_step": flops,
        "peak_mem_mib": round(peak_mib, 1) if peak_mib is not None else None,
        "peak_reset_ok": peak_reset if device.type == "cpu" else True,
        "params_g": sum(p.numel() for p in trainer.ema.parameters()),
        "wall_s": round(wall, 2),
        "loadavg_1m_before": round(load_before, 2) if load_before is not None else None,
        **({"conv_layers": layers} if layers is not None else {}),
    }


def conv_layers(trainer, repeat: int = 5) -> list[dict]:
    """Each 3D convolution of the trainer's networks, timed alone (forward + backward) on the
    input shape it saw in one real step, in the trainer's precision and memory format."""
    import torch
    from torch import nn

    from napari_medgan.models.blocks import UpsampleConv3d

    device = trainer.device
    seen: dict[tuple, dict] = {}
    hooks = []

    def record(name):
        def hook(module, args, _out):
            key = (name, tuple(args[0].shape))
            if key not in seen:
                seen[key] = {"module": module, "name": name, "input": list(args[0].shape)}
        return hook

    for net_name, net in (("G", trainer.G), ("D", trainer.D)):
        for name, module in net.named_modules():
            if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
                hooks.append(module.register_forward_hook(record(f"{net_name}.{name}")))
    try:
        trainer._train_step()
    finally:
        for h in hooks:
            h.remove()
    channels_last = trainer.config.train.memory_format == "channels_last"
    amp = trainer.amp_dtype
    out = []
    for entry in seen.values():
        module = entry.pop("module")
        x = torch.randn(entry["input"], device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x.requires_grad_(True)

        def once():
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                y = module(x)
            y.backward(torch.ones_like(y))

        once()
        with FlopCount() as counter:
            once()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(repeat):
            once()
        _sync(device)
        seconds = (time.perf_counter() - t0) / repeat
        kernel, stride = list(module.kernel_size), list(module.stride)
        kind = "transposed" if isinstance(module, nn.ConvTranspose3d) else "conv"
        if isinstance(module, UpsampleConv3d):  # runs as a 4^3 stride-2 transposed conv
            kind, kernel, stride = "upsample", [4] * 3, [2] * 3
        out.append({**entry, "kind": kind, "in_channels": module.in_channels,
                    "out_channels": module.out_channels, "kernel": kernel, "stride": stride,
                    "ms": round(1e3 * seconds, 3), "flops": counter.total,
                    "tflops": round(counter.total / seconds / 1e12, 3)})
        module.zero_grad(set_to_none=True)
    return out


def matmul_gflops(threads: int | None = None, n: int = 2048, repeat: int = 5) -> float:
    """float32 matrix multiply speed here (GFLOP/s, best of ``repeat``): the CPU reference."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeat))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    try:
        record = run_config(spec)
    except Exception as exc:  # noqa: BLE001 - an OOM or compile failure is a result too
        record = {**_key(spec), "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    print(RESULT_TAG + json.dumps(record), flush=True)
    return 0


def _key(spec: dict) -> dict:
    return {k: spec[k] for k in ("family", "size", "batch", "variant")}


# ----------------------------------------------------------------- driver
def _parse_sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",") if s.strip()]
    for s in sizes:
        if s < 32 or s % 32:
            raise SystemExit(f"--sizes: expected multiples of 32, got {s}")
    return sizes


def _parse_batches(text: str | None) -> dict[int, int]:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        size, _, batch = item.partition(":")
        out[int(size)] = int(batch)
    return out


def _run_isolated(spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {**_key(spec), "error": f"worker exited {proc.returncode}: {tail[:300]}"}


def _memory_kind(device: str) -> str:
    if device.startswith("cuda"):
        return "torch.cuda.max_memory_allocated minus allocation before the trainer was set up (MiB)"
    return ("CPU peak RSS growth: /proc/self/status VmHWM at the end minus VmRSS before the "
            "trainer was set up, VmHWM reset via /proc/self/clear_refs, one subprocess per "
            "config (MiB)")


def _print_table(records: list[dict], reference: str) -> None:
    head = (f"{'family':<9} {'size':>4} {'batch':>5} {'variant':<26} {'step s':>8} "
            f"{'Mvox/s':>8} {'speed-up':>8} {'TFLOP/s':>8} {reference:>9} {'peak MiB':>9}")
    print(head)
    print("-" * len(head))
    for r in records:
        if "error" in r:
            print(f"{r['family']:<9} {r['size']:>4} {r['batch']:>5} {r['variant']:<26} "
                  f"ERROR {r['error']}")
            continue
        speed = f"{r['speedup_vs_baseline']:.2f}x" if r.get("speedup_vs_baseline") else "-"
        mem = f"{r['peak_mem_mib']:.0f}" if r.get("peak_mem_mib") is not None else "-"
        tf = f"{r['tflops']:.3f}" if r.get("tflops") is not None else "-"
        ref = f"{100 * r['of_reference']:.1f}%" if r.get("of_reference") is not None else "-"
        print(f"{r['family']:<9} {r['size']:>4} {r['batch']:>5} {r['variant']:<26} "
              f"{r['step_s_mean']:>8.3f} {r['voxels_per_s'] / 1e6:>8.3f} {speed:>8} "
              f"{tf:>8} {ref:>9} {mem:>9}")


def _print_layers(records: list[dict], ref: float | None, reference: str) -> None:
    """Per configuration: each convolution alone, slowest first, and their sum."""
    for r in records:
        layers = r.get("conv_layers")
        if not layers:
            continue
        total = sum(x["ms"] for x in layers)
        print(f"\n{r['family']} {r['size']} b{r['batch']} {r['variant']}: "
              f"{len(layers)} convolutions alone {total:.1f} ms of a {1e3 * r['step_s_mean']:.1f} "
              f"ms step (forward + backward each, R1 not included)")
        for x in sorted(layers, key=lambda x: -x["ms"]):
            share = f"{100 * x['tflops'] * 1e12 / ref:.1f}%" if ref else "-"
            print(f"  {x['name']:<28} {x['kind']:<10} {x['in_channels']:>4}->{x['out_channels']:<4}"
                  f" k{x['kernel'][0]} s{x['stride'][0]} in {'x'.join(map(str, x['input'])):<18}"
                  f" {x['ms']:>8.2f} ms {x['tflops']:>8.2f} TFLOP/s {share:>6} {reference}")


def _write(out: Path, payload: dict) -> None:
    """Write the results so far (after every configuration: a run cut short keeps them)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, out)  # never leave half a result file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="dcgan3d,pix2pix3d,hagan3d",
                        help="model families, comma-separated")
    parser.add_argument("--sizes", help="sizes, comma-separated (default 32,64,128; --quick "
                        "on CPU: 32,64); hagan3d's is the whole volume")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--steps", type=int, help="timed steps per config (default 5, --quick 2)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 2, --quick 1)")
    parser.add_argument("--batch", help="override batch sizes, e.g. 32:8,64:2")
    parser.add_argument("--channels", type=int, default=32, help="model width (default 32)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--variants", help="variants, comma-separated (default: per device)")
    parser.add_argument("--quick", action="store_true", help="few steps; on CPU skip 128^3")
    parser.add_argument("--layers", action="store_true",
                        help="also time each convolution of the step on its own")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/...)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker_main(args.worker)

    import torch

    from _hardware import describe_hardware, hardware_slug

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device: CUDA requested but torch.cuda.is_available() is False")
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if args.sizes:
        sizes = _parse_sizes(args.sizes)
    else:
        # On a 2-core CPU one 128^3 step at width 32 takes ~1 min (~2 TFLOP): not "quick".
        sizes = [32, 64] if args.quick and kind == "cpu" else [32, 64, 128]
    steps = args.steps or (2 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    batches = {**BATCH[kind], **_parse_batches(args.batch)}
    if args.variants:
        variants = args.variants.split(",")
    elif kind == "cuda":
        variants = ["eager-fp32", "bf16", "bf16+channels_last"] + \
            (["bf16+channels_last+compile"] if args.compile else [])
    else:
        variants = ["eager-fp32", "channels_last", "bf16"] + \
            (["fp32+compile"] if args.compile else [])
    if args.threads:
        torch.set_num_threads(args.threads)

    hardware = describe_hardware(device)
    peak = bf16_peak(hardware.get("gpu_name")) if kind == "cuda" else None
    matmul = None if kind == "cuda" else matmul_gflops(args.threads)
    reference = "of bf16" if kind == "cuda" else "of matmul"
    print(f"# {hardware['cpu_model']} ({hardware['cpu_cores_usable']} cores, flags "
          f"{','.join(hardware['cpu_flags'])}), torch {hardware['torch']}"
          + (f", {hardware['gpu_name']} (bf16 peak {peak / 1e12:.0f} TFLOP/s)" if peak else "")
          + (f", fp32 matmul {matmul:.1f} GFLOP/s" if matmul else "")
          + f", device {device}, load {hardware.get('loadavg_1m')}", flush=True)
    today = _dt.date.today()
    out = Path(args.out) if args.out else (
        HERE / "results" / f"train_throughput-{hardware_slug(hardware, device)}-"
        f"{today.strftime('%Y%m%d')}.json")
    payload = {
        "benchmark": "train_throughput",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "hardware": hardware,
        "settings": {"device": device, "families": args.families, "channels": args.channels,
                     "steps": steps, "warmup": warmup, "quick": args.quick,
                     "variants": variants, "threads": args.threads or hardware["torch_threads"]},
        "reference": ({"kind": "dense bf16 peak of the GPU (data sheet)", "flops_per_s": peak}
                      if kind == "cuda" else
                      {"kind": "float32 2048x2048 matmul measured in this run",
                       "flops_per_s": matmul * 1e9 if matmul else None}),
        "step": "Trainer._train_step(): batch from the data, DiffAugment, the family's step "
                "(D update with lazy R1 every r1_every steps, G update, EMA), losses left on "
                "the device; FLOPs counted by torch.utils.flop_counter on the eager step",
        "memory_kind": _memory_kind(device),
    }
    records = []
    t0 = time.perf_counter()
    for family in args.families.split(","):
        for size in sizes:
            batch = batches.get(size, 1)
            baseline, flops = None, None
            for variant in variants:
                spec = {"device": device, "family": family, "size": size, "batch": batch,
                        "variant": variant, "steps": steps,
                        "warmup": max(warmup, 3) if "compile" in variant else warmup,
                        "channels": args.channels, "threads": args.threads,
                        "count_flops": variant == "eager-fp32", "layers": args.layers}
                rec = _run_isolated(spec)
                if "error" not in rec:
                    if variant == "eager-fp32":
                        baseline, flops = rec["step_s_mean"], rec["flops_per_step"]
                    if baseline:
                        rec["speedup_vs_baseline"] = round(baseline / rec["step_s_mean"], 3)
                    if flops:
                        rec["flops_per_step"] = flops  # the same computation in every variant
                        rec["tflops"] = round(flops / rec["step_s_mean"] / 1e12, 4)
                        ref = peak if kind == "cuda" else (matmul * 1e9 if matmul else None)
                        rec["of_reference"] = round(flops / rec["step_s_mean"] / ref, 4) \
                            if ref else None
                records.append(rec)
                _write(out, {**payload, "results": records,
                             "total_wall_s": round(time.perf_counter() - t0, 1)})
                print(f"  {family} {size} b{batch} {variant}: "
                      + (rec.get("error") or f"{rec['step_s_mean']:.3f} s/step"), flush=True)
    total = time.perf_counter() - t0

    print()
    _print_table(records, reference)
    if args.layers:
        _print_layers(records, peak if kind == "cuda" else (matmul * 1e9 if matmul else None),
                      reference)
    _write(out, {**payload, "results": records, "total_wall_s": round(total, 1)})
    print(f"\nwrote {out} ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
