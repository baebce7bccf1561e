"""Training throughput of the 3D DCGAN: voxels per second of one full GAN step.

One step is what the trainer does (``napari_medgan.training.trainer``), minus
data loading, augmentation, R1 and EMA:

* D step: G(z) without grad, D on ``cat(real, fake)``, non-saturating loss,
  backward, Adam step;
* G step: G(z), D (frozen) on the fake, generator loss, backward, Adam step.

Each configuration (patch size x variant) runs in its own subprocess, so peak
memory is per configuration and one configuration's caches cannot help or hurt
the next. Variants compared in the same run:

* ``eager-fp32``: the baseline, default memory format, no autocast;
* ``fast``: bf16 autocast (where the device supports it), ``channels_last_3d``
  weights and activations, ``torch.backends.cudnn.benchmark`` on CUDA;
* ``fast+compile`` (with ``--compile``): the same under ``torch.compile``.

Usage::

    python benchmarks/train_throughput.py --quick              # CPU: ~2-3 min
    python benchmarks/train_throughput.py --device cuda --compile
    python benchmarks/train_throughput.py --sizes 32,64 --steps 5 --batch 32:8,64:2

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


# ----------------------------------------------------------------- memory
def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------- worker
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_config(spec: dict) -> dict:
    """Time one (size, batch, variant) in this process; returns a result record."""
    import torch

    from napari_medgan import models
    from napari_medgan.config import ModelConfig
    from napari_medgan.training.losses import discriminator_loss, generator_loss

    device = torch.device(spec["device"])
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    variant = spec["variant"]
    fast = variant != "eager-fp32"
    amp_dtype = None
    if fast:
        if device.type == "cuda":
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest algo
        elif device.type == "cpu":
            amp_dtype = torch.bfloat16
    memfmt = torch.channels_last_3d if fast else torch.contiguous_format

    peak_reset = _reset_peak_rss() if device.type == "cpu" else False
    rss0 = _proc_status_kib("VmRSS") if device.type == "cpu" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        mem0 = torch.cuda.memory_allocated(device)

    torch.manual_seed(0)
    size, batch = int(spec["size"]), int(spec["batch"])
    cfg = ModelConfig(name="dcgan3d", task="synthesis", patch_size=size,
                      channels=int(spec["channels"]), latent_dim=int(spec["latent_dim"]))
    G = models.build_generator(cfg).to(device, memory_format=memfmt)
    D = models.build_discriminator(cfg).to(device, memory_format=memfmt)
    n_g = sum(p.numel() for p in G.parameters())
    n_d = sum(p.numel() for p in D.parameters())
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    g_run, d_run = G, D
    if variant == "fast+compile":
        g_run, d_run = torch.compile(G), torch.compile(D)
    real = (torch.rand(batch, 1, size, size, size, device=device) * 2 - 1).contiguous(
        memory_format=memfmt)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                              enabled=amp_dtype is not None)

    def step() -> None:
        with torch.no_grad(), autocast():
            fake = g_run(G.sample_latent(batch, device=device))
        with autocast():
            logits = d_run(torch.cat([real, fake.to(real.dtype)], 0))
        real_logits, fake_logits = logits.float().chunk(2, 0)
        loss_d = discriminator_loss("bce", real_logits, fake_logits)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        D.requires_grad_(False)
        with autocast():
            g_logits = d_run(g_run(G.sample_latent(batch, device=device)))
        loss_g = generator_loss("bce", g_logits)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    times = []
    t_start = time.perf_counter()
    for i in range(int(spec["warmup"]) + int(spec["steps"])):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        if i >= int(spec["warmup"]):
            times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_start

    if device.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated(device) - mem0) / 2**20
    else:
        hwm = _proc_status_kib("VmHWM")
        peak_mib = (hwm - rss0) / 1024 if hwm is not None and rss0 is not None else None
    median = statistics.median(times)
    return {
        "size": size, "batch": batch, "variant": variant,
        "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
        "channels_last_3d": fast, "compile": variant == "fast+compile",
        "cudnn_benchmark": bool(fast and device.type == "cuda"),
        "step_s_median": round(median, 4), "step_s_all": [round(t, 4) for t in times],
        "voxels_per_s": round(batch * size**3 / median, 1),
        "peak_mem_mib": round(peak_mib, 1) if peak_mib is not None else None,
        "peak_reset_ok": peak_reset if device.type == "cpu" else True,
        "params_g": n_g, "params_d": n_d, "wall_s": round(wall, 2),
        "loadavg_1m_before": round(load_before, 2) if load_before is not None else None,
        "loadavg_1m_after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    try:
        record = run_config(spec)
    except Exception as exc:  # noqa: BLE001 - an OOM or compile failure is a result too
        record = {"size": spec["size"], "batch": spec["batch"], "variant": spec["variant"],
                  "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    print(RESULT_TAG + json.dumps(record), flush=True)
    return 0


# ----------------------------------------------------------------- driver
def _parse_sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",") if s.strip()]
    for s in sizes:
        if s < 16 or s % 16:
            raise SystemExit(f"--sizes: expected multiples of 16, got {s}")
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
    return {"size": spec["size"], "batch": spec["batch"], "variant": spec["variant"],
            "error": f"worker exited {proc.returncode}: {tail[:300]}"}


def _memory_kind(device: str) -> str:
    if device.startswith("cuda"):
        return "torch.cuda.max_memory_allocated minus allocation before the models were built (MiB)"
    return ("CPU peak RSS growth: /proc/self/status VmHWM at the end minus VmRSS before the models "
            "were built, VmHWM reset via /proc/self/clear_refs, one subprocess per config (MiB)")


def _print_table(records: list[dict]) -> None:
    head = (f"{'size':>5} {'batch':>5} {'variant':<13} {'dtype':<9} {'step s':>9} "
            f"{'Mvox/s':>8} {'speed-up':>8} {'peak MiB':>9}")
    print(head)
    print("-" * len(head))
    for r in records:
        if "error" in r:
            print(f"{r['size']:>5} {r['batch']:>5} {r['variant']:<13} ERROR {r['error']}")
            continue
        speed = f"{r['speedup_vs_baseline']:.2f}x" if r.get("speedup_vs_baseline") else "-"
        mem = f"{r['peak_mem_mib']:.0f}" if r.get("peak_mem_mib") is not None else "-"
        print(f"{r['size']:>5} {r['batch']:>5} {r['variant']:<13} {r['amp_dtype']:<9} "
              f"{r['step_s_median']:>9.3f} {r['voxels_per_s'] / 1e6:>8.3f} {speed:>8} {mem:>9}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", help="patch sizes, comma-separated (default 32,64,128; "
                        "--quick on CPU: 32,64)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--steps", type=int, help="timed steps per config (default 5, --quick 2)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 2, --quick 1)")
    parser.add_argument("--batch", help="override batch sizes, e.g. 32:8,64:2")
    parser.add_argument("--channels", type=int, default=32, help="model width (default 32)")
    parser.add_argument("--latent-dim", type=int, default=128)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="also time fast+torch.compile")
    parser.add_argument("--quick", action="store_true", help="few steps; on CPU skip 128^3")
    parser.add_argument("--in-process", action="store_true",
                        help="run every config in this process (peak memory then not per config)")
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
    variants = ["eager-fp32", "fast"] + (["fast+compile"] if args.compile else [])
    if args.threads:
        torch.set_num_threads(args.threads)

    hardware = describe_hardware(device)
    print(f"# {hardware['cpu_model']} ({hardware['cpu_cores_usable']} cores), torch "
          f"{hardware['torch']}" + (f", {hardware['gpu_name']}" if kind == "cuda" else "")
          + f", device {device}, load {hardware.get('loadavg_1m')}", flush=True)
    records = []
    t0 = time.perf_counter()
    for size in sizes:
        batch = batches.get(size, 1)
        baseline = None
        for variant in variants:
            spec = {"device": device, "size": size, "batch": batch, "variant": variant,
                    "steps": steps, "warmup": max(warmup, 3) if "compile" in variant else warmup,
                    "channels": args.channels, "latent_dim": args.latent_dim,
                    "threads": args.threads}
            rec = run_config(spec) if args.in_process else _run_isolated(spec)
            if variant == "eager-fp32" and "error" not in rec:
                baseline = rec["step_s_median"]
            if "error" not in rec and baseline:
                rec["speedup_vs_baseline"] = round(baseline / rec["step_s_median"], 3)
            records.append(rec)
            print(f"  {size}^3 b{batch} {variant}: "
                  + (rec.get("error") or f"{rec['step_s_median']:.3f} s/step"), flush=True)
    total = time.perf_counter() - t0

    print()
    _print_table(records)
    today = _dt.date.today()
    out = Path(args.out) if args.out else (
        HERE / "results" / f"train_throughput-{hardware_slug(hardware, device)}-"
        f"{today.strftime('%Y%m%d')}.json")
    payload = {
        "benchmark": "train_throughput",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "hardware": hardware,
        "settings": {"device": device, "model": "dcgan3d", "channels": args.channels,
                     "latent_dim": args.latent_dim, "loss": "bce", "optimizer": "Adam",
                     "steps": steps, "warmup": warmup, "quick": args.quick,
                     "compile": args.compile, "isolated": not args.in_process,
                     "threads": args.threads or hardware["torch_threads"]},
        "step": "D: G(z) no-grad + D(cat(real, fake)) + backward + Adam; "
                "G: D(G(z)) + backward + Adam. No R1, augmentation, EMA or data loading.",
        "memory_kind": _memory_kind(device),
        "total_wall_s": round(total, 1),
        "results": records,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, out)  # never leave half a result file
    print(f"\nwrote {out} ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
