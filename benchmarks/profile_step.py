"""Where the trainer's real step spends its time: ``torch.profiler`` over a few steps.

Builds the same :class:`~napari_medgan.training.trainer.Trainer` as
``train_throughput.py`` (phantom data, one family, size, batch and variant) and profiles
``Trainer._train_step()``. Printed: the step's wall time; the time the GPU was busy
(kernels) and so idle; the time drawing the batch (``data.sample_batch``) takes on its
own; and the operators that take most device time (or CPU time, on a CPU), grouped into
convolutions, normalisation, element-wise work, copies and the rest, so a change to the
hot path can be aimed at what costs.

Usage::

    python benchmarks/profile_step.py --device cuda --family dcgan3d --size 128 --batch 4
    python benchmarks/profile_step.py --size 32 --batch 4           # CPU, a minute

Results: ``benchmarks/results/profile_step-<hardware>-<device>-<date>-<family><size>.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # run from a checkout without installing

#: operator-name fragments -> group, first match wins
GROUPS = (("nchwtonhwc", "copy / layout"), ("nhwctonchw", "copy / layout"),
          ("memcpy", "copy / layout"), ("copy", "copy / layout"),
          ("contiguous", "copy / layout"), ("cat", "copy / layout"), ("index", "copy / layout"),
          ("conv", "convolution"), ("xmma", "convolution"), ("implicit_gemm", "convolution"),
          ("cudnn", "convolution"), ("gemm", "matmul"), ("mm", "matmul"),
          ("linear", "matmul"), ("norm", "normalisation"), ("bn_", "normalisation"),
          ("upsample", "upsample"), ("grid_sampler", "augment"), ("rand", "augment"))


def group_of(name: str) -> str:
    low = name.lower()
    for fragment, group in GROUPS:
        if fragment in low:
            return group
    return "element-wise / other"


def profile(spec: dict, steps: int) -> dict:
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from train_throughput import _sync, _trainer

    device = torch.device(spec["device"])
    trainer = _trainer(spec)
    cuda = device.type == "cuda"

    def step() -> None:
        trainer._train_step()
        trainer.step += 1

    for _ in range(int(spec["warmup"])):
        step()
    _sync(device)

    # the batch draw alone (CPU crop + copy to the device)
    draws = []
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = trainer.data.sample_batch(trainer.config.train.batch_size, trainer.rng)
        {k: trainer.to_device(v) for k, v in batch.items() if torch.is_tensor(v)}
        _sync(device)
        draws.append(time.perf_counter() - t0)

    walls = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        walls.append(time.perf_counter() - t0)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    events = prof.key_averages()
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"

    def self_us(e) -> float:
        value = getattr(e, attr, None)
        if value is None and cuda:
            value = getattr(e, "self_cuda_time_total", 0.0)
        return float(value or 0.0)

    ranked = sorted((e for e in events if self_us(e) > 0), key=lambda e: -self_us(e))
    rows = [(e.key, self_us(e) / steps, e.count // steps) for e in ranked]
    # on a GPU, kernels and copies alone (an operator's device time is its kernels' again)
    timed = [row for row, e in zip(rows, ranked)
             if not cuda or e.device_type == DeviceType.CUDA]
    busy_us = sum(r[1] for r in timed)
    groups: dict[str, float] = {}
    for name, us, _ in timed:
        groups[group_of(name)] = groups.get(group_of(name), 0.0) + us
    wall = statistics.median(walls)
    return {
        **{k: spec[k] for k in ("family", "size", "batch", "variant", "channels")},
        "step_s_median": round(wall, 4),
        "draw_s_median": round(statistics.median(draws), 4),
        "busy_s_per_step": round(busy_us / 1e6, 4),
        "busy_fraction": round(busy_us / 1e6 / wall, 3) if cuda else None,
        "groups_ms": {k: round(v / 1e3, 2) for k, v in sorted(groups.items(),
                                                              key=lambda kv: -kv[1])},
        "top": [{"op": name[:120], "ms_per_step": round(us / 1e3, 3), "calls": calls}
                for name, us, calls in rows[:25]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="dcgan3d")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--variant", default="eager-fp32",
                        help="a train_throughput.py variant (precision, layout, compile)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args(argv)

    import torch

    from _hardware import describe_hardware, hardware_slug

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    spec = {"device": device, "family": args.family, "size": args.size, "batch": args.batch,
            "variant": args.variant, "channels": args.channels, "warmup": args.warmup}
    hardware = describe_hardware(device)
    result = profile(spec, args.steps)
    print(f"# {hardware.get('gpu_name') or hardware['cpu_model']}, torch {hardware['torch']}")
    print(f"{args.family} {args.size}^3 batch {args.batch} width {args.channels} "
          f"{args.variant}: step {result['step_s_median'] * 1e3:.1f} ms, batch draw alone "
          f"{result['draw_s_median'] * 1e3:.1f} ms, "
          f"{'device' if device != 'cpu' else 'CPU'} busy {result['busy_s_per_step'] * 1e3:.1f}"
          f" ms" + (f" ({100 * result['busy_fraction']:.0f}% of the step)"
                    if result["busy_fraction"] is not None else ""))
    print("by group (ms/step): " + ", ".join(f"{k} {v}" for k, v in result["groups_ms"].items()))
    print(f"{'ms/step':>8} {'calls':>5}  op")
    for row in result["top"]:
        print(f"{row['ms_per_step']:>8.2f} {row['calls']:>5}  {row['op']}")
    out = Path(args.out) if args.out else (
        HERE / "results" / f"profile_step-{hardware_slug(hardware, device)}-"
        f"{_dt.date.today().strftime('%Y%m%d')}-{args.family}{args.size}-"
        f"{args.variant.replace('+', '-')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "profile_step", "hardware": hardware,
                               "date": _dt.datetime.now().isoformat(timespec="seconds"),
                               **result}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
