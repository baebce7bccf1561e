"""Train on synthetic, test on real: do a model's image + label pairs teach a segmenter?

The reference for every claim about synthetic pairs. On the head-phantom
distribution (real label maps exist), for each pair-making model family:

1. train the family with the demo's settings at a 32^3 grid for a fixed wall-clock budget;
2. draw ``M`` synthetic image + label pairs;
3. train the same small MONAI 3D U-Net segmenter (``napari_medgan.metrics.segmentation``)
   on (a) ``N`` real pairs, (b) ``N`` synthetic pairs only, (c) ``N`` real + ``M``
   synthetic pairs (crops from pairs drawn uniformly), (c1) the same pairs with half of
   each batch from the real ones, (c3) the same pairs for the first half of the steps and
   the real ones alone for the second (pre-train, fine-tune), (a3) that schedule on the
   real pairs alone (its control), and score each on held-out
   real phantoms (Dice per class); for a
   family with an image stage (``twostage3d``), also (b2) / (c2): (b) / (c) with that
   stage's images for the label maps of unseen real phantoms, which says whether the
   pairs lose in their label maps (stage 1) or in their images (stage 2);
4. the set metrics (diversity ratio, intensity W1, FID-style distance with the
   extractor named, nearest-real memorization) of the synthetic images against
   real ones, with the real-vs-real value of each as the floor.

The real training phantoms, the test phantoms and the GAN's training phantoms are
disjoint draws. Prints one table, writes JSON to ``benchmarks/results/`` naming
the hardware. Goals (issue "image + label pairs"): (b) >= 80% of (a)'s Dice;
(c) not worse than (a); diversity ratio 0.9-1.1; 0 memorized samples.

    .venv/bin/python benchmarks/augmentation.py                 # ~11-15 min on 2 CPU cores
    .venv/bin/python benchmarks/augmentation.py --budget 60 --seg-steps 100   # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_medgan.demo import DEMO_TEST_SEED

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# the GAN's demo phantoms use seeds 0, 1, ...; the demo's own check tests on the first
# DEMO_TEST_PHANTOMS of these test phantoms
REAL_SEED, TEST_SEED = 10_000, DEMO_TEST_SEED
#: label maps of further real phantoms, for a pair family's image stage alone (b2, c2)
STAGE2_SEED = 30_000
#: the benchmark's grid and GAN training phantoms: 32^3, where a segmenter trains in seconds
#: (the demo itself runs at 64^3; there the segmenters would take the benchmark past 15 min)
GRID, GAN_PHANTOMS = 32, 256
#: pair-making families: the demo's training settings (batch, learning rates) at GRID, with
#: the demo's own model (twostage3d: a label-map generator, then SPADE label -> image, stage 1
#: on the full grid, as label_scale 2 would make it 16^3) and the models given (dcgan3d
#: joint; hagan3d: the whole grid, trained in 16-plane slabs plus the 8^3 volume)
FAMILIES = {"dcgan3d-joint": dict(name="dcgan3d", task="joint", patch_size=GRID, channels=16,
                                  latent_dim=64),
            "hagan3d-joint": dict(name="hagan3d", task="joint", volume_shape=(GRID,) * 3,
                                  slab_size=16, channels=16, latent_dim=64),
            "twostage3d-joint": dict(name="twostage3d", task="joint", patch_size=GRID,
                                     channels=16, latent_dim=64, label_scale=1)}


def train_family(name: str, out: Path, budget: float, seed: int):
    """A pair-making model trained with its demo settings for ``budget`` seconds."""
    from napari_medgan.training.console import consume
    from napari_medgan.demo import demo_config
    from napari_medgan.training.inference import load_generator
    from napari_medgan.training.trainer import Trainer

    from napari_medgan.config import ModelConfig

    if name not in FAMILIES:
        raise ValueError(f"family: {name!r} is not a pair-making family here; "
                         f"expected one of {tuple(FAMILIES)}")
    run = demo_config(out, steps=100_000, seed=seed)
    run.data.phantom_size, run.data.phantom_count = GRID, GAN_PHANTOMS
    run.model = ModelConfig(**FAMILIES[name])
    trainer = Trainer(run)
    trainer.stop_after(budget)
    summary = consume(trainer, 10**9, show=False)
    return load_generator(summary["checkpoint"], device="cpu"), summary.get("step"), run


def draw_pairs(loaded, n: int, seed: int):
    from napari_medgan.training.inference import generate

    images, labels = generate(loaded, n, seed=seed)
    return [v.array for v in images], [np.asarray(v.array) for v in labels]


def stage2_pairs(loaded, n: int, seed: int, shape):
    """A pair family's image stage (``inference.image_stage``) alone: the images it draws
    for the label maps of ``n`` unseen real phantoms, with those maps; None for a family
    without one. Against (b) and (c), it says which stage the synthetic pairs lose in."""
    from napari_medgan.data.phantom import fit_spacing, make_phantom_set
    from napari_medgan.training.inference import image_stage, synthesize_from

    if image_stage(loaded) is None:
        return None
    maps = [lab for _, lab in make_phantom_set(n, shape, fit_spacing(shape), seed)]
    return ([synthesize_from(loaded, m).array for m in maps],
            [np.asarray(m.array) for m in maps])


def half_real(n_real: int, n_synthetic: int) -> list[float]:
    """Sampling weights for real + synthetic pairs that draw half the crops from each."""
    return [0.5 / n_real] * n_real + [0.5 / n_synthetic] * n_synthetic


def segment_scores(train_sets: dict, test, num_classes: int, steps: int, seed: int) -> dict:
    """Dice on ``test`` of a segmenter trained ``steps`` steps on each set. A set is
    ``(images, labels[, weights])``, or a list of them: phases that share the steps equally,
    each going on from the network the last one left (pre-train, then fine-tune)."""
    from napari_medgan.metrics.segmentation import dice_per_class, train_segmenter

    out = {}
    for name, spec in train_sets.items():
        phases = spec if isinstance(spec, list) else [spec]
        t0, net = time.perf_counter(), None
        for i, (images, labels, *weights) in enumerate(phases):
            net = train_segmenter(images, labels, num_classes,
                                  steps=steps // len(phases) + (i < steps % len(phases)),
                                  seed=seed + i, weights=weights[0] if weights else None,
                                  net=net)
        dice = dice_per_class(net, test[0], test[1], num_classes)
        n_train = len(phases[0][0])
        out[name] = {"dice_per_class": [float(d) for d in dice], "mean_dice": float(np.mean(dice)),
                     "n_train": n_train, "seconds": round(time.perf_counter() - t0, 1)}
        print(f"  segmenter on {name:<22} mean Dice {np.mean(dice):.3f}  "
              f"({n_train} pairs, {out[name]['seconds']} s)", flush=True)
    return out


def main(argv=None) -> int:
    from _hardware import describe_hardware, hardware_slug

    from napari_medgan.data.phantom import fit_spacing, phantom_arrays
    from napari_medgan.metrics.report import evaluate_sets, summarize_report

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--families", nargs="+", default=["twostage3d-joint", "dcgan3d-joint"],
                   choices=list(FAMILIES))
    p.add_argument("--budget", type=float, default=220.0, help="GAN training seconds")
    p.add_argument("--n-real", type=int, default=8, help="N: real training pairs")
    p.add_argument("--n-synthetic", type=int, default=32, help="M: synthetic pairs")
    p.add_argument("--n-test", type=int, default=16, help="held-out real phantoms")
    p.add_argument("--seg-steps", type=int, default=300, help="segmenter training steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON path (default benchmarks/results/augmentation-...json)")
    args = p.parse_args(argv)

    import torch

    torch.manual_seed(args.seed)
    hardware = describe_hardware("cpu")
    print(f"# {hardware['cpu_model']} ({hardware['cpu_cores_usable']} cores), torch "
          f"{hardware['torch']}; GAN budget {args.budget:g} s, segmenter {args.seg_steps} steps",
          flush=True)
    shape = (GRID,) * 3
    real_img, real_lab = phantom_arrays(args.n_real, shape, fit_spacing(shape),
                                        REAL_SEED + args.seed)
    test_pairs = phantom_arrays(args.n_test, shape, fit_spacing(shape), TEST_SEED + args.seed)
    num_classes = int(max(a.max() for a in real_lab)) + 1

    floor = summarize_report(evaluate_sets(real_img, test_pairs[0], seed=args.seed))
    records = {}
    with tempfile.TemporaryDirectory(prefix="medgan-augmentation-") as work:
        for family in args.families:
            print(f"\n## {family}", flush=True)
            t0 = time.perf_counter()
            loaded, steps, _ = train_family(family, Path(work) / family, args.budget, args.seed)
            gan_seconds = time.perf_counter() - t0
            syn_img, syn_lab = draw_pairs(loaded, args.n_synthetic, seed=args.seed + 1)
            print(f"  trained {steps} steps in {gan_seconds:.0f} s; drew {len(syn_img)} pairs",
                  flush=True)
            n = args.n_real
            sets = {"(a) real": (real_img, real_lab),
                    "(b) synthetic": (syn_img[:n], syn_lab[:n]),
                    "(c) real + synthetic": (real_img + syn_img, real_lab + syn_lab),
                    # the same pairs, half of each batch's crops from the real ones
                    "(c1) real + syn, 1:1": (real_img + syn_img, real_lab + syn_lab,
                                             half_real(len(real_img), len(syn_img))),
                    # the same pairs for the first half of the steps, the real ones alone
                    # for the second: pre-train on everything, fine-tune on real scans
                    "(c3) r+s, then real": [(real_img + syn_img, real_lab + syn_lab),
                                           (real_img, real_lab)],
                    # c3's control: the same two phases (a fresh optimiser half-way) on
                    # the real pairs alone, so c3 - a3 is what the synthetic pairs add
                    "(a3) real, then real": [(real_img, real_lab), (real_img, real_lab)]}
            staged = stage2_pairs(loaded, args.n_synthetic, STAGE2_SEED + args.seed, shape)
            if staged is not None:
                sets["(b2) stage 2, real maps"] = (staged[0][:n], staged[1][:n])
                sets["(c2) real + stage 2"] = (real_img + staged[0], real_lab + staged[1])
            scores = segment_scores(sets, test_pairs, num_classes, args.seg_steps, args.seed)
            quality = summarize_report(evaluate_sets(real_img + test_pairs[0], syn_img,
                                                     seed=args.seed))
            a, b, c = (scores[k]["mean_dice"]
                       for k in ("(a) real", "(b) synthetic", "(c) real + synthetic"))
            c1, c3, a3 = (scores[k]["mean_dice"] for k in (
                "(c1) real + syn, 1:1", "(c3) r+s, then real", "(a3) real, then real"))
            records[family] = {"gan_steps": steps, "gan_seconds": round(gan_seconds, 1),
                               "segmenter": scores, "ratio_b_to_a": b / a if a else None,
                               "c_minus_a": c - a, "c1_minus_a": c1 - a, "c3_minus_a": c3 - a,
                               "c3_minus_a3": c3 - a3,
                               "set_metrics": quality}
            if staged is not None:
                b2, c2 = (scores[k]["mean_dice"]
                          for k in ("(b2) stage 2, real maps", "(c2) real + stage 2"))
                records[family].update(ratio_b2_to_a=b2 / a if a else None, c2_minus_a=c2 - a)

    print(f"\n{'family':<16} {'(a) real':>9} {'(b) syn':>9} {'b/a':>6} {'(c) r+s':>9} "
          f"{'c-a':>7} {'diversity':>9} {'W1':>8} {'memorized':>10}")
    for family, rec in records.items():
        s, q = rec["segmenter"], rec["set_metrics"]
        print(f"{family:<16} {s['(a) real']['mean_dice']:>9.3f} "
              f"{s['(b) synthetic']['mean_dice']:>9.3f} {rec['ratio_b_to_a']:>6.2f} "
              f"{s['(c) real + synthetic']['mean_dice']:>9.3f} {rec['c_minus_a']:>+7.3f} "
              f"{q.get('diversity_ratio') or float('nan'):>9.3f} "
              f"{q.get('intensity_wasserstein') or float('nan'):>8.4g} "
              f"{q['memorized'].split(' ')[0]:>10}")
    for family, rec in records.items():
        print(f"{family:<16} (c) with half of each batch real (1:1): c1-a "
              f"{rec['c1_minus_a']:+.3f}")
        print(f"{family:<16} (c) pre-trained on both, fine-tuned on real (half the steps "
              f"each): c3-a {rec['c3_minus_a']:+.3f}, against the same schedule on the real "
              f"pairs alone: c3-a3 {rec['c3_minus_a3']:+.3f}")
    for family, rec in records.items():
        if "c2_minus_a" in rec:
            print(f"{family:<16} stage 2 alone on unseen real label maps: b2/a "
                  f"{rec['ratio_b2_to_a']:.2f}, c2-a {rec['c2_minus_a']:+.3f}")
    print(f"{'real vs real':<16} {'':>9} {'':>9} {'':>6} {'':>9} {'':>7} "
          f"{floor.get('diversity_ratio') or float('nan'):>9.3f} "
          f"{floor.get('intensity_wasserstein') or float('nan'):>8.4g} "
          f"{floor['memorized'].split(' ')[0]:>10}")
    out = Path(args.out) if args.out else (
        HERE / "results"
        / f"augmentation-{hardware_slug(hardware, 'cpu')}-{time.strftime('%Y%m%d')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "augmentation", "hardware": hardware,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "num_classes": num_classes, "real_vs_real": floor, "results": records,
    }, indent=2, default=str))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
