"""The ``napari-medgan`` command line: the same engine as the napari widgets, headless.

Subcommands: ``train``, ``generate``, ``evaluate``, ``export-dataset``, ``export-model``,
``demo``.
Bad input exits with status 2 and one line on stderr; tracebacks are for bugs.
Multi-process: ``torchrun --nproc_per_node=K -m napari_medgan train ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_medgan import __version__
from napari_medgan.config import SAMPLING_HELP, field_help, train_flags
from napari_medgan.tasks import TASKS

# Flags of `train` that override a field of the config: flag dest -> (section, field),
# derived from the config dataclasses (napari_medgan.config.opt).
TRAIN_OVERRIDES = {dest: (section, name) for section, name, dest, _, _ in train_flags()}


class CLIError(Exception):
    """Bad command-line input; printed as one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from napari_medgan.io.atomic import DiskFullError
    from napari_medgan.training.checkpoint import CheckpointError
    from napari_medgan.training.trainer import TrainingError

    return (ValueError, FileNotFoundError, NotADirectoryError, CheckpointError, TrainingError,
            DiskFullError, CLIError)


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="napari-medgan",
        description="3D GANs for medical volumes: train, synthesize, evaluate (headless).",
    )
    p.add_argument("--version", action="version", version=f"napari-medgan {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train or fine-tune a GAN",
                       description="Train a 3D GAN. Flags override the --config file.")
    t.add_argument("--config", type=Path, help="YAML run config (see resources/*.yaml)")
    titles = {"model": "model", "data": "data", "train": "training"}
    groups = {section: t.add_argument_group(title) for section, title in titles.items()}
    for section, _, dest, kind, text in train_flags():
        groups[section].add_argument("--" + dest.replace("_", "-"), dest=dest, type=kind,
                                     help=text)
    g = t.add_argument_group("run")
    g.add_argument("--out", type=Path, help=field_help("run", "out"))
    g.add_argument("--resume", action="store_true", help=field_help("run", "resume"))
    g.add_argument("--init", type=Path, help=field_help("run", "init"))

    gen = sub.add_parser("generate", help="synthesize volumes from a trained model")
    gen.add_argument("checkpoint", type=Path, help=SAMPLING_HELP["checkpoint"])
    gen.add_argument("--n", type=int, default=4, help=SAMPLING_HELP["n"])
    gen.add_argument("--seed", type=int, default=0, help=SAMPLING_HELP["seed"])
    gen.add_argument("--out", type=Path, required=True, help="output folder for NIfTI files")
    gen.add_argument("--condition", type=Path, help=SAMPLING_HELP["condition"])
    gen.add_argument("--mask", type=Path, help=SAMPLING_HELP["mask"])
    gen.add_argument("--reference", type=Path, help=SAMPLING_HELP["reference"])
    gen.add_argument("--no-flip-ensemble", dest="flip_ensemble", action="store_false",
                     help="one pass instead of 8; the default: " + SAMPLING_HELP["flip_ensemble"])
    gen.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")

    e = sub.add_parser("evaluate", help="quality, diversity and memorization figures")
    e.add_argument("--real", type=Path, required=True, help="folder of real volumes")
    e.add_argument("--fake", type=Path, required=True, help="folder of synthetic volumes")
    e.add_argument("--reference-pairs", action="store_true",
                   help="real and fake are pairs (sorted order): add MAE/PSNR/SSIM/MS-SSIM")
    e.add_argument("--mask", type=Path, help="folder of masks (paired metrics inside them)")
    e.add_argument("--out", type=Path, default=Path("report.json"),
                   help="report JSON path (a PNG summary is written beside it)")
    e.add_argument("--extractor", default="random",
                   help="features for the FID-style distance: 'random' (fixed-seed random 3D "
                        "conv net), 'train' (trained on the real set), or a .safetensors file")
    e.add_argument("--seed", type=int, default=0, help="seed for sub-sampling and features")

    from napari_medgan.export import add_export_parser

    add_export_parser(sub)

    from napari_medgan.export_model import add_export_model_parser

    add_export_model_parser(sub)

    d = sub.add_parser("demo", help="the main job: train on the phantom, synthesize, compare")
    d.add_argument("--out", type=Path, default=Path("runs/demo"))
    d.add_argument("--steps", type=int, default=None, help="override the demo's step count")
    d.add_argument("--budget", type=float, default=None,
                   help="training wall-clock budget in seconds (default 220; 0 = no limit)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--segmenter-steps", type=int, default=None,
                   help="steps of each segmenter in the check that the synthetic pairs teach "
                        "segmentation (default 200; 0 skips it)")

    r = sub.add_parser("report", help="a run's training record: loss curves, previews, figures",
                       description="Write history.csv, report.png and report.html for a run "
                                   "folder (finished, stopped or still running).")
    r.add_argument("run", type=Path, help="run folder")
    r.add_argument("--out", type=Path, help="folder for the report (default: the run folder)")
    for command in sub.choices.values():
        r = command.add_argument_group("reading volumes")
        r.add_argument("--max-volume-gb", type=float,
                       help="largest volume read into memory, GiB (default 2; env "
                            "NAPARI_MEDGAN_MAX_VOLUME_GB)")
        r.add_argument("--allow-external-data", action="store_true",
                       help="let detached NRRD/MetaImage headers name data files outside their "
                            "own folder (env NAPARI_MEDGAN_ALLOW_EXTERNAL_DATA=1)")
    return p


def apply_reading_limits(args: argparse.Namespace) -> None:
    """The reading flags as the environment variables every reader consults
    (:mod:`napari_medgan.io.guards`), so torchrun workers and data loaders see them too."""
    import os

    from napari_medgan.io import guards

    if args.max_volume_gb is not None:
        if not 0 < args.max_volume_gb < float("inf"):
            raise CLIError(f"--max-volume-gb: expected a positive number, got {args.max_volume_gb}")
        os.environ[guards.MAX_VOLUME_ENV] = repr(args.max_volume_gb)
    if args.allow_external_data:
        os.environ[guards.EXTERNAL_DATA_ENV] = "1"


# --------------------------------------------------------------------------- train
def build_run_config(args: argparse.Namespace):
    """Config file (if any) plus flag overrides, validated."""
    from napari_medgan.config import RunConfig

    run = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    raw = run.to_dict()
    for dest, (section, field) in TRAIN_OVERRIDES.items():
        value = getattr(args, dest, None)
        if value is not None:
            raw[section][field] = value
    if raw["model"]["name"] != run.model.name and getattr(args, "task", None) is None:
        raw["model"]["task"] = None  # a new model gets its own default task
    if args.out is not None:
        raw["out"] = str(args.out)
    if args.init is not None:
        raw["init"] = str(args.init)
    raw["resume"] = bool(args.resume) or bool(raw.get("resume"))
    if raw["init"] and raw["resume"]:
        raise CLIError("--resume and --init exclude each other: resume continues a run, "
                       "init starts a new one from trained weights")
    return RunConfig.from_dict(raw)


def cmd_train(args: argparse.Namespace) -> int:
    from napari_medgan.training.console import consume
    from napari_medgan.training.distributed import cleanup_distributed, init_distributed
    from napari_medgan.training.trainer import Trainer

    run = build_run_config(args)
    info = init_distributed(run.train.device)
    try:
        trainer = Trainer(run)
        summary = consume(trainer, run.train.log_every, show=info.is_main)
        if info.is_main:
            print(f"done ({summary.get('done')}) at step {summary.get('step')}; "
                  f"checkpoint: {summary.get('checkpoint')}")
    finally:
        cleanup_distributed()
    return 0


# ------------------------------------------------------------------------ generate
def cmd_generate(args: argparse.Namespace) -> int:
    from napari_medgan.io import load_volume, save_volume, volume_stem
    from napari_medgan.training.inference import (
        generate, image_stage, load_generator, synthesize_from)

    from tqdm import tqdm

    loaded = load_generator(args.checkpoint, device=args.device)
    # a pair model with an image stage draws the image for a label map given as condition
    from_labels = not loaded.model.conditional and args.condition is not None
    if from_labels and image_stage(loaded) is None:
        raise CLIError(f"{args.checkpoint}: model {loaded.model.name}/{loaded.model.task} "
                       "takes no --condition; it draws --n samples from noise")
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    windows = loaded.model.conditional or from_labels
    bar = tqdm(desc="synthesizing", unit="window batch" if windows else "volume",
               disable=None, leave=False)  # disable=None: only on a terminal

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    if windows:
        if args.condition is None:
            raise CLIError(f"{args.checkpoint}: model {loaded.model.name}/{loaded.model.task} is "
                           "conditional: give --condition FILE")
        task = "label2image" if from_labels else loaded.model.task
        cond = load_volume(args.condition, is_label=TASKS[task].condition == "labels")
        mask = load_volume(args.mask, is_label=True) if args.mask else None
        with bar:
            result = synthesize_from(loaded, cond, mask=mask, progress=progress,
                                     flip_ensemble=args.flip_ensemble)
        if task == "superres":
            print("superres: voxel size {} -> {} mm (x, y, z)".format(
                "x".join(f"{s:g}" for s in cond.spacing),
                "x".join(f"{s:g}" for s in result.spacing)))
        written.append(save_volume(result, args.out / f"{volume_stem(args.condition)}_"
                                   f"{task}.nii.gz"))
    else:
        reference = load_volume(args.reference) if args.reference else None
        with bar:
            images, labels = generate(loaded, args.n, seed=args.seed, reference=reference,
                                      progress=progress)
        for i, img in enumerate(images):
            written.append(save_volume(img, args.out / f"synthetic_{i:03d}.nii.gz"))
            if labels:
                written.append(save_volume(labels[i], args.out / f"synthetic_{i:03d}_labels.nii.gz"))
    for path in written:
        print(path)
    return 0


# ------------------------------------------------------------------------ evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from napari_medgan.metrics.report import evaluate_folders, summarize_report

    report = evaluate_folders(args.real, args.fake, reference_pairs=args.reference_pairs,
                              mask_dir=args.mask, out=args.out, extractor=args.extractor,
                              seed=args.seed)
    print(json.dumps(summarize_report(report), indent=2, default=str))
    print(f"report: {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from napari_medgan.demo import DEMO_SEGMENTER_STEPS, DEMO_TRAIN_SECONDS, run_demo

    budget = DEMO_TRAIN_SECONDS if args.budget is None else args.budget
    checks = DEMO_SEGMENTER_STEPS if args.segmenter_steps is None else args.segmenter_steps
    if checks < 0:
        raise ValueError(f"--segmenter-steps: expected >= 0, got {checks}")
    run_demo(args.out, steps=args.steps, seed=args.seed, budget_seconds=budget,
             segmenter_steps=checks)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from napari_medgan.export import cmd_export_dataset

    return cmd_export_dataset(args)


def cmd_export_model(args: argparse.Namespace) -> int:
    from napari_medgan.export_model import cmd_export_model as export

    return export(args)


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from napari_medgan.run_report import summary, write_report
    from napari_medgan.training.history import read_history

    paths = write_report(args.run, args.out)
    print(json.dumps(summary(read_history(args.run)), indent=2, default=str))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


COMMANDS = {"train": cmd_train, "generate": cmd_generate, "evaluate": cmd_evaluate,
            "export-dataset": cmd_export, "export-model": cmd_export_model,
            "demo": cmd_demo, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        apply_reading_limits(args)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("napari-medgan: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        print(f"napari-medgan: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
