"""Conditional synthesis quality against the classical baselines, on data the model never saw.

The reference for every claim about synthesis quality. For each conditional
task a model is trained for a fixed wall-clock budget on one half of a real
volume and judged on the other half, against the classical method it would
replace, in the same run. The real volumes (``benchmarks/_real_volumes.py``):
``t1``, nibabel's real T1 head (shipped with a dependency; tiny, 33 x 41 x 25
voxels of 2 mm), and ``mni``, the MNI152 2009a template at 2 mm with a label
map from its tissue maps (read from the nilearn wheel's data files when that
is installed):

===================== ============================================ ==============================
task                  held-out input                               baselines
===================== ============================================ ==============================
label2image           4-class tissue map (t1: multi-Otsu)          per-class mean lookup
superres x2           box-averaged 4 mm voxels                     trilinear, cubic B-spline
superres 1x1x4        8 mm slices (through-plane only)             trilinear, cubic B-spline
denoise gaussian      + Gaussian noise, sigma 4% of robust max      Gaussian smoothing, NLM
denoise rician        + Rician noise, sigma 4% of robust max        Gaussian smoothing, NLM
inpaint               a box of 35% of each side blanked (3 boxes)  biharmonic (scored in the hole)
translate             phantom MR -> CT (unseen phantoms)           histogram matching
===================== ============================================ ==============================

The model is applied as a user gets it: sliding windows averaged over the 8 flips
of the input (``napari-medgan generate``'s default); the JSON also keeps the figures
of a single pass (``one_pass``). Prints one table (volume, task, metric, model, each
baseline, margin over the best baseline), writes JSON to ``benchmarks/results/`` with
the hardware named, and exits 1 when a model loses to a baseline on any metric.

    .venv/bin/python benchmarks/quality.py                   # every task, 300 s each
    .venv/bin/python benchmarks/quality.py --volumes mni --tasks label2image superres2
    .venv/bin/python benchmarks/quality.py --tasks superres2 --budget 60
    .venv/bin/python benchmarks/quality.py --volume my_t1.nii.gz --labels my_seg.nii.gz
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: benchmark task -> (model task, settings)
TASKS = {
    "label2image": ("label2image", {}),
    "superres2": ("superres", {"factors": (2, 2, 2)}),
    "superres1x1x4": ("superres", {"factors": (1, 1, 4)}),
    "denoise-gaussian": ("denoise", {"noise": "gaussian"}),
    "denoise-rician": ("denoise", {"noise": "rician"}),
    "inpaint": ("inpaint", {}),
    "translate": ("translate", {}),
}
NOISE_FRACTION = 0.04  # noise sigma as a fraction of the 99.5th percentile intensity
HIGHER_IS_BETTER = {"SSIM": True, "PSNR": True, "MAE": False}
ONE_PASS = "model, one pass"  # the model without the 8-flip average (JSON only)
#: label2image: the classical estimate the generator starts from, without its learned correction
START = "starting estimate"


def train(task: str, images, labels, targets, budget: float, settings: dict, seed: int,
          out: Path, patch: int, channels: int, preset: str, target_preset: str | None,
          noise_std: float | None, lr: tuple[float, float]):
    from napari_medgan.config import RunConfig
    from napari_medgan.training import events as ev
    from napari_medgan.training.inference import load_generator
    from napari_medgan.training.trainer import Trainer

    model = {"name": "pix2pix3d", "task": task, "patch_size": patch, "channels": channels}
    if "factors" in settings:
        model["superres_factors"] = list(settings["factors"])
    if "noise" in settings:
        model["noise"] = settings["noise"]
        model["noise_std"] = float(noise_std)
    run = RunConfig.from_dict({
        "model": model,
        "data": {"preset": preset, "target_preset": target_preset},
        # what a user gets: the default learning rates, validation slab and early stopping
        "train": {"steps": 100_000, "batch_size": 4, "seed": seed, "lr_g": lr[0], "lr_d": lr[1],
                  "preview_every": 10_000, "checkpoint_every": 100_000, "log_every": 50},
        "out": str(out),
    })
    trainer = Trainer(run, images=images, labels=labels, targets=targets)
    t0 = time.perf_counter()
    trainer.stop_after(budget)
    steps, done = 0, None
    for event in trainer.run():
        if isinstance(event, ev.StepEvent):
            steps = event.step
        elif isinstance(event, ev.DoneEvent):
            done = event
    # the held-out validation: which step's generator was kept, and its gain over the start
    return (load_generator(done.checkpoint, device="cpu"), steps, time.perf_counter() - t0,
            dict(trainer.validation))


def without_correction(loaded):
    """``loaded`` with its generator's zero-initialised head zeroed again: what the network
    starts from (label2image: lookup + class-fraction context), to show what training added."""
    import copy
    import dataclasses

    import torch

    generator = copy.deepcopy(loaded.generator)
    with torch.no_grad():
        generator.head.weight.zero_()
        generator.head.bias.zero_()
    return dataclasses.replace(loaded, generator=generator)


def evaluate_task(name: str, budget: float, seed: int, volume: str, real, work: Path,
                  args) -> dict:
    from napari_medgan import baselines
    from napari_medgan.evaluation import compute_baselines, judge, make_case, split_halves
    from napari_medgan.training.inference import synthesize_from

    task, settings = TASKS[name]
    rng = np.random.default_rng(seed)
    preset, target_preset = args.preset, None
    if task == "translate":
        from napari_medgan.data.phantom import fit_spacing, make_phantom_set

        volume = "phantom"
        shape = (32, 32, 32)
        mr = make_phantom_set(args.phantoms + 2, shape, fit_spacing(shape), seed, "mr")
        ct = make_phantom_set(args.phantoms + 2, shape, fit_spacing(shape), seed, "ct")
        train_src = [v for v, _ in mr[:-2]]
        train_tgt = [v for v, _ in ct[:-2]]
        cases = [make_case(task, ct[i][0], source=mr[i][0]) for i in (-2, -1)]
        images, labels, targets, preset, target_preset = train_src, None, train_tgt, "mr", "ct"
        noise_std = None
    else:
        image, tissue = real
        train_img, test_img = split_halves(image)
        train_lab, test_lab = split_halves(tissue)
        images, labels, targets = [train_img], [train_lab], None
        sigma = NOISE_FRACTION * float(np.percentile(image.array, 99.5))
        noise_std = None
        if task == "denoise":
            from napari_medgan.evaluation import normalised_sigma
            from napari_medgan.io import fit_normalizer

            noise_std = normalised_sigma(fit_normalizer(preset, [train_img.array]), sigma)
        count = 3 if task == "inpaint" else 1
        cases = [make_case(task, test_img, test_lab, factors=settings.get("factors", (2, 2, 2)),
                           noise=settings.get("noise", "gaussian"), noise_sigma=sigma, rng=rng)
                 for _ in range(count)]
    loaded, steps, seconds, validation = train(
        task, images, labels, targets, budget, settings, seed, work / f"{volume}-{name}",
        args.patch, args.channels, preset, target_preset, noise_std, (args.lr_g, args.lr_d))
    totals: dict[str, dict[str, list[float]]] = {}
    for k, case in enumerate(cases):
        # what a user gets (the 8-flip self-ensemble), and the single pass it averages
        results = {"model": synthesize_from(loaded, case.condition, case.mask),
                   ONE_PASS: synthesize_from(loaded, case.condition, case.mask,
                                             flip_ensemble=False)}
        if task == "label2image":
            results[START] = synthesize_from(without_correction(loaded), case.condition,
                                             flip_ensemble=False)
        results.update(compute_baselines(loaded, case))
        if args.pictures and k == 0:
            save_picture(Path(args.pictures) / f"quality-{volume}-{name}.png", case, results)
        for method, figures in judge(case.truth, results, region=case.region).items():
            for metric, value in figures.items():
                totals.setdefault(method, {}).setdefault(metric, []).append(value)
    figures = {m: {k: float(np.mean(v)) for k, v in d.items()} for m, d in totals.items()}
    rows = []
    for metric in ("SSIM", "PSNR", "MAE"):
        model = figures["model"][metric]
        base = {b: figures[b][metric] for b in baselines.BASELINES[task]}
        sign = 1 if HIGHER_IS_BETTER[metric] else -1
        best = max(base.values(), key=lambda v: sign * v)
        rows.append({"task": name, "volume": volume, "metric": metric, "model": model,
                     "one_pass": figures[ONE_PASS][metric], "baselines": base,
                     "margin": sign * (model - best), "wins": sign * (model - best) > 0})
    return {"task": name, "volume": volume, "model_task": task, "steps": steps,
            "validation": validation,
            "train_seconds": round(seconds, 1), "cases": len(cases), "figures": figures,
            "rows": rows}


def save_picture(path: Path, case, results: dict) -> None:
    """The middle axial (array axis 0) and coronal (axis 1) slices of the input, the truth
    and every result in one grey window (the truth's 0.5-99.5th percentiles; a label-map
    input in its own range), the input drawn over the truth's extent, so thick voxels show
    as thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = np.asarray(case.truth.array, np.float32)
    cond = np.asarray(case.condition.array, np.float32)
    lo, hi = np.percentile(truth, [0.5, 99.5])
    labels_in = case.task == "label2image"  # a label map: its own range; images: the truth's
    volumes = [("input", cond, None if labels_in else (lo, hi)), ("truth", truth, (lo, hi))]
    volumes += [(name, np.asarray(v.array, np.float32), (lo, hi))
                for name, v in results.items() if name != ONE_PASS]
    fig, axes = plt.subplots(2, len(volumes), figsize=(2.4 * len(volumes), 4.6), squeeze=False)
    for row, axis in enumerate((0, 1)):
        rest = [a for a in range(3) if a != axis]  # the slice's (rows, columns) axes
        extent = (0, truth.shape[rest[1]], 0, truth.shape[rest[0]])
        for ax, (title, arr, window) in zip(axes[row], volumes):
            index = min(arr.shape[axis] - 1, truth.shape[axis] // 2 * arr.shape[axis]
                        // truth.shape[axis])
            img = np.take(arr, index, axis=axis)
            vmin, vmax = window if window else (img.min(), img.max())
            ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, origin="lower",
                      interpolation="nearest", extent=extent)
            ax.set_title(f"{title} ({'axial' if axis == 0 else 'coronal'})", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(records: list[dict]) -> None:
    print(f"\n{'volume':<6} {'task':<17} {'metric':<6} {'model':>9}  {'baselines':<44} "
          f"{'margin':>8}")
    for rec in records:
        for row in rec["rows"]:
            base = ", ".join(f"{k} {v:.4g}" for k, v in row["baselines"].items())
            flag = "" if row["wins"] else "  LOSES"
            print(f"{row['volume']:<6} {row['task']:<17} {row['metric']:<6} {row['model']:>9.4g}"
                  f"  {base:<44} {row['margin']:>+8.4g}{flag}")
        start = rec["figures"].get(START)
        start = ("; starting estimate " + ", ".join(f"{k} {v:.4g}" for k, v in start.items())
                 if start else "")
        val = rec.get("validation") or {}
        kept = f"; kept step {val['best_step']}" if "best_step" in val else ""
        print(f"{'':<24} ({rec['steps']} steps in {rec['train_seconds']} s{kept}{start})")


def main(argv=None) -> int:
    from _real_volumes import VOLUMES, load_real, nilearn_data_dir

    from napari_medgan.config import TrainConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--volumes", nargs="+", choices=VOLUMES,
                   help="real volumes to train and judge on (default: t1, and mni when "
                        "nilearn's data files are installed); translate runs once, on phantoms")
    p.add_argument("--budget", type=float, default=300.0,
                   help="training seconds per task (default: 5 minutes, the bound the "
                        "benchmark was specified with)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--volume", help="your own volume instead of the t1 (nibabel's "
                                     "anatomical.nii)")
    p.add_argument("--labels", help="its label map (default: 4-class multi-Otsu)")
    p.add_argument("--preset", default="mr", help="intensity preset of the real volumes")
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--lr-g", type=float, default=TrainConfig.lr_g,
                   help="generator learning rate (default: the config's)")
    p.add_argument("--lr-d", type=float, default=TrainConfig.lr_d,
                   help="discriminator learning rate (default: the config's)")
    p.add_argument("--phantoms", type=int, default=8, help="training phantoms (translate)")
    p.add_argument("--pictures", help="folder for one PNG per task: middle axial and coronal "
                                      "slices of the input, truth, model and baselines")
    p.add_argument("--out", help="JSON path (default benchmarks/results/quality-...json)")
    args = p.parse_args(argv)
    volumes = args.volumes or ["t1"] + (["mni"] if nilearn_data_dir() else [])

    import torch

    from _hardware import describe_hardware, hardware_slug

    torch.manual_seed(args.seed)
    hardware = describe_hardware("cpu")
    print(f"# {hardware['cpu_model']} ({hardware['cpu_cores_usable']} cores), torch "
          f"{hardware['torch']}, load {hardware.get('loadavg_1m')}; budget {args.budget:g} s "
          "per task", flush=True)
    if "mni" not in volumes and not args.volumes:
        print("# mni: not installed, skipped (`.venv/bin/pip install --no-deps nilearn` adds "
              "the MNI152 template)", flush=True)
    records, described = [], {}
    with tempfile.TemporaryDirectory(prefix="medgan-quality-") as work:
        for i, volume in enumerate(volumes):
            real = load_real(volume, args.volume, args.labels)
            described[volume] = real[0].describe()
            print(f"# {volume}: {described[volume]}", flush=True)
            for name in args.tasks:
                if TASKS[name][0] == "translate" and i > 0:
                    continue  # phantom MR -> CT: the same for every real volume
                rec = evaluate_task(name, args.budget, args.seed, volume, real, Path(work), args)
                records.append(rec)
                print_table([rec])
    print_table(records)
    out = Path(args.out) if args.out else (
        HERE / "results"
        / f"quality-{hardware_slug(hardware, 'cpu')}-{time.strftime('%Y%m%d')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    losers = [f"{r['volume']} {r['task']} {r['metric']}"
              for rec in records for r in rec["rows"] if not r["wins"]]
    out.write_text(json.dumps({
        "benchmark": "quality", "hardware": hardware,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "volumes": described, "noise_fraction": NOISE_FRACTION,
        "results": records, "all_win": not losers}, indent=2, default=str))
    print(f"\nwrote {out}")
    if losers:
        print(f"model loses to a baseline: {', '.join(losers)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
