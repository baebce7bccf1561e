"""Peak memory of one training step: whole-volume against hierarchical training, and the
memory planner's estimate against the measurement, in one run.

For each size (default 64^3, 128^3, 256^3) and family (``dcgan3d``: the generator makes
the whole volume and the discriminator judges it; ``hagan3d``: a low-resolution volume and
one full-resolution slab per step), one subprocess sets up the real :class:`Trainer` on a
phantom of that size and runs two steps (``napari_medgan.training.memory.measure_steps``,
the planner's own measuring function, warmed up on a small configuration first): the
steps' peak over the memory before setup, so the networks, optimiser state and data are
in and the passing peak of building the phantom is not. The
planner (``plan_memory``) then estimates the same configuration from its small measured
steps, and the table shows estimate / measured.

Configurations whose planner estimate exceeds the memory available are skipped and
reported as such (that is what the planner is for). Also timed: generating one whole
volume at the largest size with the hierarchical generator (untrained weights, the same
computation as a trained one).

Usage::

    python benchmarks/memory.py                      # CPU (peak RSS)
    python benchmarks/memory.py --device cuda        # GPU (max_memory_allocated)
    python benchmarks/memory.py --sizes 64,128 --batch 2

Results: ``benchmarks/results/memory-<hardware>-<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # run from a checkout without installing

FAMILIES = ("dcgan3d", "hagan3d")


def _run_config(family: str, size: int, batch: int, channels: int, device: str,
                slab: int, precision: str):
    from napari_medgan.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    extra = {"volume_shape": (size,) * 3, "slab_size": min(slab, size)} \
        if family == "hagan3d" else {"patch_size": size}
    return RunConfig(
        data=DataConfig(source="phantom", phantom_count=1, phantom_size=size, val_fraction=0.0),
        model=ModelConfig(name=family, task="synthesis", channels=channels, **extra),
        train=TrainConfig(batch_size=batch, steps=2, device=device, precision=precision,
                          memory_format="contiguous", compile="off", memory_check="off",
                          preview_every=10**6, checkpoint_every=10**6, log_every=10**6),
        out=os.devnull)


def _measure(run, device: str) -> dict:
    """The real step's peak in a fresh process (warmed up on a 32^3 copy first)."""
    from napari_medgan.training.memory import _measuring_run, scaled_model

    small = scaled_model(run.model, max(1, min(run.model.patch_size,
                                               *(run.model.volume_shape or (10**6,))) // 32))
    warm = _measuring_run(run, small or run.model)
    target = run.to_dict()
    code = ("import json, sys, torch\n"
            "from napari_medgan.training.memory import measure_steps\n"
            "print('PEAKS ' + json.dumps(measure_steps(json.loads(sys.argv[1]), sys.argv[2])))\n")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, json.dumps([warm, target]), device],
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("PEAKS "):
            return {"measured_bytes": json.loads(line[6:])[-1],
                    "measure_s": round(time.perf_counter() - t0, 1)}
    tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    if proc.returncode < 0:
        tail = f"killed by signal {-proc.returncode} (out of memory?)"
    return {"error": tail[:300]}


def _time_generation(size: int, channels: int, device: str, slab: int) -> dict:
    import torch

    from napari_medgan.config import ModelConfig
    from napari_medgan.models import build_generator

    cfg = ModelConfig(name="hagan3d", volume_shape=(size,) * 3, slab_size=min(slab, size),
                      channels=channels)
    dev = torch.device(device)
    gen = build_generator(cfg).to(dev).eval()
    z = gen.sample_latent(1, generator=torch.Generator().manual_seed(0))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    with torch.no_grad():
        for _ in range(2 if dev.type == "cpu" else 3):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            out = gen(z)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - t0)
    record = {"size": size, "shape": list(out.shape), "seconds_first": round(times[0], 3),
              "seconds": round(min(times[1:]), 3)}
    if dev.type == "cuda":
        record["peak_bytes"] = int(torch.cuda.max_memory_allocated(dev))
    return record


def _write(out: Path, payload: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, out)  # never leave half a result file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,128,256", help="cube edges (multiples of 32)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--slab", type=int, default=32, help="hagan3d slab thickness")
    parser.add_argument("--precision", default="auto", help="auto | fp32 | bf16")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--out", help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args(argv)

    import torch

    from _hardware import describe_hardware, hardware_slug
    from napari_medgan.training.memory import GIB, available_bytes, plan_memory

    device = torch.device(args.device if args.device != "cuda" else "cuda:0")
    hardware = describe_hardware(args.device)
    print(f"# {hardware['cpu_model']} ({hardware['cpu_cores_usable']} cores, "
          f"{hardware['memory_gib']} GiB)" + (f", {hardware.get('gpu_name')}"
                                             if device.type == "cuda" else "")
          + f", torch {hardware['torch']}", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    today = _dt.date.today().strftime("%Y%m%d")
    out = Path(args.out) if args.out else (
        HERE / "results" / f"memory-{hardware_slug(hardware, args.device)}-{today}.json")
    payload = {
        "benchmark": "memory",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "hardware": hardware,
        "settings": {"device": args.device, "batch": args.batch, "channels": args.channels,
                     "slab": args.slab, "precision": args.precision, "sizes": sizes},
        "memory_kind": ("torch.cuda.max_memory_allocated growth" if device.type == "cuda" else
                        "peak RSS growth (VmHWM after clear_refs, heap trimmed first)")
                       + ": the peak of two training steps, counted from before the Trainer "
                         "was set up (networks, optimiser state and data included; the "
                         "passing peak of building the data left out)",
    }
    records = []
    t_start = time.perf_counter()
    for size in sizes:
        for family in args.families.split(","):
            run = _run_config(family, size, args.batch, args.channels, args.device, args.slab,
                              args.precision)
            data_bytes = size**3 * 4 if device.type == "cpu" else 0  # the phantom image
            t0 = time.perf_counter()
            plan = plan_memory(run, device, data_bytes=data_bytes)
            record = {"family": family, "size": size, "batch": args.batch,
                      "model": dataclasses.asdict(run.model),
                      "estimate_bytes": plan.estimate, "estimate_parts": plan.parts,
                      "plan_s": round(time.perf_counter() - t0, 1),
                      "planner_measured": plan.measured, "available_bytes": plan.available}
            free, _ = available_bytes(device)
            if plan.estimate > 0.9 * free:
                record["skipped"] = (f"planner estimate {plan.estimate / GIB:.1f} GB > 90% of "
                                     f"{free / GIB:.1f} GB available")
            else:
                record.update(_measure(run, args.device))
            if "measured_bytes" in record:
                record["estimate_over_measured"] = round(
                    plan.estimate / max(record["measured_bytes"], 1), 3)
            records.append(record)
            _write(out, {**payload, "results": records})  # a run cut short keeps its figures
            shown = record.get("error") or record.get("skipped") or \
                f"{record['measured_bytes'] / GIB:.2f} GB measured"
            print(f"  {size}^3 {family}: estimate {plan.estimate / GIB:.2f} GB, {shown}",
                  flush=True)

    by = {(r["family"], r["size"]): r for r in records}
    for size in sizes:
        whole, hier = by.get(("dcgan3d", size)), by.get(("hagan3d", size))
        if whole and hier and "measured_bytes" in whole and "measured_bytes" in hier:
            hier["measured_vs_whole_volume"] = round(
                hier["measured_bytes"] / whole["measured_bytes"], 3)

    generation = [_time_generation(max(sizes), args.channels, args.device, args.slab)]
    total = time.perf_counter() - t_start

    print(f"\n{'size':>5} {'family':<8} {'estimate GB':>11} {'measured GB':>11} "
          f"{'est/meas':>8} {'vs whole':>8}")
    for r in records:
        meas = f"{r['measured_bytes'] / GIB:.2f}" if "measured_bytes" in r else \
            ("skipped" if "skipped" in r else "error")
        ratio = f"{r['estimate_over_measured']:.2f}" if "estimate_over_measured" in r else "-"
        vs = f"{r['measured_vs_whole_volume']:.2f}" if "measured_vs_whole_volume" in r else "-"
        print(f"{r['size']:>5} {r['family']:<8} {r['estimate_bytes'] / GIB:>11.2f} {meas:>11} "
              f"{ratio:>8} {vs:>8}")
    g = generation[0]
    print(f"\ngenerating one {g['size']}^3 volume (hagan3d, {args.device}): {g['seconds']:.2f} s "
          f"(first call {g['seconds_first']:.2f} s)")

    _write(out, {**payload, "results": records, "generation": generation,
                 "total_s": round(total, 1)})
    print(f"\nwrote {out} ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
