"""The main job (``napari-medgan demo`` / ``make demo``): train the two-stage image + label
model (``twostage3d``: a label map, then the image computed from it) on the built-in
head-phantom distribution on the CPU in a few minutes, synthesize pairs, and write NIfTI files,
a side-by-side picture of real and synthetic mid-slices, and the figures, with the one that
says whether the pairs are worth having: a segmenter trained on them against one trained on
as many real phantoms, both tested on real phantoms neither saw."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from napari_medgan.config import DataConfig, ModelConfig, RunConfig, TrainConfig

DEMO_STEPS = 2000
#: Pairs synthesized, and real phantoms they are compared with. 16, not 8: which 8 heads a
#: model happened to draw moved the segmenter check by 0.05 (0.753 and 0.803 for one
#: checkpoint's two sets of 8 pairs), more than the goal's margin; 16 costs no more time
#: (the segmenters train for a fixed number of steps).
DEMO_SAMPLES = 16
#: Wall-clock budget for training: the run stops (with a final checkpoint) when it is spent,
#: so the whole demo stays within about five minutes on a 2-core CPU.
DEMO_TRAIN_SECONDS = 220.0
#: The segmenter check: training steps of each of the two segmenters (0 skips the check),
#: and how many unseen real phantoms they are tested on (seeds far from the GAN's 0-255).
DEMO_SEGMENTER_STEPS = 200
DEMO_TEST_PHANTOMS, DEMO_TEST_SEED = 16, 20_000


def demo_config(out: str | Path, steps: int | None = None, seed: int = 0) -> RunConfig:
    """Settings chosen to learn recognisable heads at 64^3 (3.6 mm) on two CPU cores in
    under five minutes, the whole demo included (``benchmarks/augmentation.py`` trains its
    ``twostage3d-joint`` with these at its own 32^3 grid)."""
    return RunConfig(
        # The phantom is a distribution: 128 fresh draws leave nothing to over-fit, so the
        # augmentation meant for small real datasets is off and every step teaches anatomy.
        data=DataConfig(source="phantom", phantom_count=128, phantom_size=64, preset="mr"),
        # Stage 1 draws the label map on the 32^3 grid (label_scale 2), 8x fewer voxels;
        # stage 2 draws the 64^3 image from its upsampled map.
        model=ModelConfig(name="twostage3d", task="joint", patch_size=64, channels=16,
                          latent_dim=64, label_scale=2),
        # Batch 4, not 8: within the fixed budget a slow machine then takes twice the steps
        # on the same number of heads (on a 2-core VM: 518-575 steps and a segmenter ratio
        # of 0.83-0.92; at batch 8, 335 steps and 0.68; benchmarks/README.md).
        train=TrainConfig(steps=steps or DEMO_STEPS, batch_size=4, lr_g=2e-4, lr_d=2e-4,
                          augment=False, seed=seed, device="auto", log_every=100,
                          preview_every=10**9, checkpoint_every=500),
        out=str(Path(out) / "run"),
    )


def _replace_previous_demo(run_dir: Path) -> None:
    """A second ``make demo`` replaces the first one's run (runs never share a folder); a
    folder holding any other run is refused, never deleted."""
    import shutil

    from napari_medgan.training.trainer import refuse_used_folder

    try:
        refuse_used_folder(run_dir)
        return
    except ValueError:
        try:
            previous = RunConfig.from_yaml(run_dir / "config.yaml")
        except (OSError, ValueError):
            previous = None
        if previous is None or previous.data.source != "phantom" or previous.resume:
            raise ValueError(f"{run_dir}: holds a run that is not a previous demo; choose "
                             "another --out folder") from None
    from napari_medgan.training.lock import RunFolderInUse, RunFolderLock

    try:
        with RunFolderLock(run_dir):  # a demo still training there is never deleted
            print(f"replacing the previous demo run in {run_dir}", file=sys.stderr)
            shutil.rmtree(run_dir)
    except RunFolderInUse as exc:
        raise ValueError(str(exc)) from None


def segmenter_check(data, images, labels, steps: int = DEMO_SEGMENTER_STEPS,
                    seed: int = 0) -> dict:
    """Mean foreground Dice on :data:`DEMO_TEST_PHANTOMS` unseen real phantoms of a segmenter
    trained on the synthetic pairs, of one trained on as many real training phantoms, and
    their ratio (the augmentation benchmark's (b) / (a), at the demo's size)."""
    import numpy as np

    from napari_medgan.data.phantom import PHANTOM_LABELS, phantom_arrays
    from napari_medgan.metrics.segmentation import segmenter_dice

    n = len(images)
    test_images, test_labels = phantom_arrays(DEMO_TEST_PHANTOMS, data.reference.shape,
                                              data.reference.spacing, DEMO_TEST_SEED + seed)
    k = int(data.num_classes)
    per_class = {}
    for name, (imgs, labs) in {
            "real": (list(data.volumes[:n]), [np.asarray(a) for a in data.label_arrays[:n]]),
            "synthetic": ([v.array for v in images], [np.asarray(v.array) for v in labels]),
    }.items():
        per_class[name] = segmenter_dice(imgs, labs, test_images, test_labels, k, steps=steps,
                                         seed=seed)
    dice = {name: float(np.mean(v)) for name, v in per_class.items()}
    return {"pairs": n, "test_phantoms": len(test_images), "segmenter_steps": int(steps),
            "dice_trained_on_real": round(dice["real"], 3),
            "dice_trained_on_synthetic": round(dice["synthetic"], 3),
            "ratio": round(dice["synthetic"] / max(dice["real"], 1e-6), 3),
            # which tissues the pairs teach well and which not (foreground classes)
            "per_class": {PHANTOM_LABELS.get(c, f"class {c}"): {
                "trained_on_real": round(float(per_class["real"][c - 1]), 3),
                "trained_on_synthetic": round(float(per_class["synthetic"][c - 1]), 3)}
                for c in range(1, k)}}


def run_demo(out: str | Path, steps: int | None = None, seed: int = 0,
             budget_seconds: float | None = DEMO_TRAIN_SECONDS,
             segmenter_steps: int = DEMO_SEGMENTER_STEPS) -> dict:
    """Run the whole demo; returns (and writes as ``figures.json``) the figures it printed."""
    from napari_medgan.training.console import consume
    from napari_medgan.io import save_volume
    from napari_medgan.metrics.report import evaluate_sets, summarize_report
    from napari_medgan.training.inference import generate, load_generator
    from napari_medgan.training.trainer import Trainer, write_summary
    from napari_medgan.visualize import save_side_by_side

    out = Path(out)
    run = demo_config(out, steps, seed)
    _replace_previous_demo(Path(run.out))
    t0 = time.perf_counter()
    trainer = Trainer(run)
    if budget_seconds:
        trainer.stop_after(budget_seconds)
    summary = consume(trainer, run.train.log_every)
    train_seconds = time.perf_counter() - t0

    phases = {"setup and training": train_seconds}
    mark = time.perf_counter()

    def phase(name: str) -> None:  # where the demo's minutes go, in figures.json
        nonlocal mark
        now = time.perf_counter()
        phases[name] = now - mark
        mark = now

    loaded = load_generator(summary["checkpoint"])
    images, labels = generate(loaded, DEMO_SAMPLES, seed=seed + 1)
    data = trainer.data
    reals = [data.reference.with_array(data.normalizer.inverse(arr), source=f"real_{i:03d}")
             for i, arr in enumerate(data.volumes[:DEMO_SAMPLES])]
    vol_dir = out / "volumes"
    for i, (img, lab) in enumerate(zip(images, labels)):
        save_volume(img, vol_dir / f"synthetic_{i:03d}.nii.gz")
        save_volume(lab, vol_dir / f"synthetic_{i:03d}_labels.nii.gz")
    for real in reals:
        save_volume(real, vol_dir / f"{real.source}.nii.gz")
    phase("generation and NIfTI files")

    real_labels = [data.reference.with_array(lab, is_label=True) for lab in data.label_arrays[:2]]
    rows = [(f"real {i}", v) for i, v in enumerate(reals[:2])]
    rows += [(f"synthetic {i}", v) for i, v in enumerate(images[:3])]
    overlays = dict(enumerate(real_labels))
    overlays.update({2 + i: lab for i, lab in enumerate(labels[:3])})
    picture = save_side_by_side(
        out / "side_by_side.png", rows, labels=overlays,
        title=f"head phantom: real vs synthetic ({summary.get('step')} steps, "
              f"{train_seconds / 60:.1f} min on {loaded.device.type})",
    )
    phase("picture")
    report = evaluate_sets([v.array for v in reals], [v.array for v in images], seed=seed)
    phase("set metrics")
    figures = {
        "steps": summary.get("step"),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(train_seconds / max(1, summary.get("step") or 1), 3),
        "final_losses": summary.get("losses"),
        "device": str(loaded.device),
        "checkpoint": summary.get("checkpoint"),
        "picture": str(picture),
        "volumes": str(vol_dir),
        "quality": summarize_report(report),
    }
    if segmenter_steps:
        print(f"segmenter check: {segmenter_steps} steps on {len(images)} synthetic pairs, "
              f"then on {len(images)} real phantoms ...", file=sys.stderr, flush=True)
        figures["segmenter"] = segmenter_check(data, images, labels, segmenter_steps, seed)
        phase("segmenter check")
    figures["total_seconds"] = round(time.perf_counter() - t0, 1)
    figures["phase_seconds"] = {k: round(v, 1) for k, v in phases.items()}
    write_summary(out / "figures.json", {**figures, "report": report})
    print(json.dumps(figures, indent=2, default=str), file=sys.stdout)
    check = figures.get("segmenter")
    if check:
        print(f"A segmenter trained on the {check['pairs']} synthetic pairs reaches mean Dice "
              f"{check['dice_trained_on_synthetic']:.3f} on {check['test_phantoms']} unseen real "
              f"phantoms, {100 * check['ratio']:.0f}% of the {check['dice_trained_on_real']:.3f} "
              f"of one trained on {check['pairs']} real phantoms.")
    return figures

