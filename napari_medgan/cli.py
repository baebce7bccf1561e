"""The ``napari-medgan`` command line: the same engine as the napari widgets, headless.

Subcommands: ``train``, ``generate``, ``evaluate``, ``export-dataset``, ``demo``.
Bad input exits with status 2 and one line on stderr; tracebacks are for bugs.
Multi-process: ``torchrun --nproc_per_node=K -m napari_medgan train ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_medgan import __version__

# Flags of `train` that override a field of the config: flag dest -> (section, field).
TRAIN_OVERRIDES = {
    "model": ("model", "name"), "task": ("model", "task"), "patch_size": ("model", "patch_size"),
    "channels": ("model", "channels"), "num_classes": ("model", "num_classes"),
    "latent_dim": ("model", "latent_dim"), "superres_factors": ("model", "superres_factors"),
    "noise": ("model", "noise"), "noise_std": ("model", "noise_std"),
    "data": ("data", "source"), "labels": ("data", "labels"), "target": ("data", "target"),
    "preset": ("data", "preset"), "target_preset": ("data", "target_preset"),
    "phantom_count": ("data", "phantom_count"), "phantom_size": ("data", "phantom_size"),
    "phantom_modality": ("data", "phantom_modality"),
    "steps": ("train", "steps"), "batch_size": ("train", "batch_size"),
    "lr_g": ("train", "lr_g"), "lr_d": ("train", "lr_d"), "loss": ("train", "loss"),
    "r1_gamma": ("train", "r1_gamma"), "device": ("train", "device"),
    "precision": ("train", "precision"), "seed": ("train", "seed"),
    "checkpoint_every": ("train", "checkpoint_every"),
    "preview_every": ("train", "preview_every"), "log_every": ("train", "log_every"),
    "l1_weight": ("train", "l1_weight"), "fm_weight": ("train", "fm_weight"),
}


class CLIError(Exception):
    """Bad command-line input; printed as one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from napari_medgan.training.checkpoint import CheckpointError
    from napari_medgan.training.trainer import TrainingError

    return (ValueError, FileNotFoundError, NotADirectoryError, CheckpointError, TrainingError,
            CLIError)


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
    g = t.add_argument_group("model")
    g.add_argument("--model", help="dcgan3d (unconditional) or pix2pix3d (conditional)")
    g.add_argument("--task", help="dcgan3d: synthesis | joint (image + label map); pix2pix3d: "
                   "label2image | translate | denoise | superres | inpaint")
    g.add_argument("--patch-size", type=int, help="cubic patch edge in voxels (multiple of 16)")
    g.add_argument("--channels", type=int, help="base network width")
    g.add_argument("--latent-dim", type=int, help="latent size (dcgan3d)")
    g.add_argument("--num-classes", type=int, help="label classes incl. background (0 = from data)")
    g.add_argument("--superres-factors",
                   help="superres: thick/thin voxel ratio per axis (x, y, z), e.g. 2 (isotropic "
                        "x2), 4, or 1x1x4 (4 mm slices -> 1 mm); each 1, 2 or 4")
    g.add_argument("--noise", help="denoise: noise the model is trained for: gaussian | rician")
    g.add_argument("--noise-std", type=float,
                   help="denoise: typical noise standard deviation in normalised units (the "
                        "preset maps the intensity range to about [-1, 1]); training draws "
                        "0.5-1.5x this")
    g = t.add_argument_group("data")
    g.add_argument("--data", help="'phantom', a folder of volumes, or a volume file")
    g.add_argument("--labels", help="folder/file of label maps matching --data")
    g.add_argument("--target", help="folder/file of paired target volumes (translate)")
    g.add_argument("--preset", help="intensity preset: ct | mr | zscore | none")
    g.add_argument("--target-preset", help="intensity preset of --target volumes")
    g.add_argument("--phantom-count", type=int, help="number of phantom volumes")
    g.add_argument("--phantom-size", type=int, help="phantom grid edge in voxels")
    g.add_argument("--phantom-modality", help="phantom contrast: mr | ct")
    g = t.add_argument_group("training")
    g.add_argument("--steps", type=int, help="optimisation steps in total")
    g.add_argument("--batch-size", type=int, help="batch size per process")
    g.add_argument("--lr-g", type=float, help="generator learning rate")
    g.add_argument("--lr-d", type=float, help="discriminator learning rate (TTUR)")
    g.add_argument("--loss", help="bce (non-saturating, default) | hinge | lsgan")
    g.add_argument("--r1-gamma", type=float, help="R1 penalty weight (0 = off)")
    g.add_argument("--l1-weight", type=float, help="L1 weight for pix2pix3d")
    g.add_argument("--fm-weight", type=float,
                   help="feature-matching weight for pix2pix3d (pix2pixHD; 0 = off)")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    g.add_argument("--precision", help="auto | fp32 | bf16 | fp16")
    g.add_argument("--seed", type=int, help="random seed (a CPU run is repeatable)")
    g.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    g.add_argument("--preview-every", type=int, help="steps between previews")
    g.add_argument("--log-every", type=int, help="steps between log lines")
    g = t.add_argument_group("run")
    g.add_argument("--out", type=Path, help="run directory (config, checkpoints, log)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--init", type=Path, help="fine-tune from this checkpoint or run directory")

    gen = sub.add_parser("generate", help="synthesize volumes from a trained model")
    gen.add_argument("checkpoint", type=Path, help="run directory or checkpoint directory")
    gen.add_argument("--n", type=int, default=4, help="number of volumes (unconditional models)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed")
    gen.add_argument("--out", type=Path, required=True, help="output folder for NIfTI files")
    gen.add_argument("--condition", type=Path,
                     help="input volume for conditional models (label map, source image, ...)")
    gen.add_argument("--mask", type=Path, help="inpainting mask (non-zero = fill in)")
    gen.add_argument("--reference", type=Path,
                     help="volume whose spacing/direction/centre the samples take")
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

    d = sub.add_parser("demo", help="the main job: train on the phantom, synthesize, compare")
    d.add_argument("--out", type=Path, default=Path("runs/demo"))
    d.add_argument("--steps", type=int, default=None, help="override the demo's step count")
    d.add_argument("--budget", type=float, default=None,
                   help="training wall-clock budget in seconds (default 220; 0 = no limit)")
    d.add_argument("--seed", type=int, default=0)
    return p


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


def consume(trainer, log_every: int, show: bool = True, stream=None) -> dict:
    """Drive the trainer's event iterator, printing progress; returns a summary."""
    from napari_medgan.training import events as ev

    stream = stream or sys.stderr
    bar = None
    last: dict = {}
    for event in trainer.run():
        if isinstance(event, ev.StepEvent):
            last = {"step": event.step, "losses": event.losses, "seconds": event.seconds}
            if not show:
                continue
            if bar is None and stream.isatty():
                from tqdm import tqdm

                bar = tqdm(total=event.total, initial=event.step - 1, file=stream,
                           desc="train", unit="step")
            text = " ".join(f"{k}={v:.3f}" for k, v in event.losses.items())
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(text)
            elif event.step % log_every == 0 or event.step == event.total:
                print(f"step {event.step}/{event.total} {text} ({event.seconds:.3f} s/step)",
                      file=stream, flush=True)
        elif show and isinstance(event, ev.MessageEvent):
            (bar.write if bar else lambda s: print(s, file=stream, flush=True))(
                f"[{event.level}] {event.text}")
        elif show and isinstance(event, ev.CheckpointEvent) and event.kind != "best":
            (bar.write if bar else lambda s: print(s, file=stream, flush=True))(
                f"checkpoint ({event.kind}) step {event.step}: {event.path}")
        elif isinstance(event, ev.DoneEvent):
            last.update(done=event.reason, checkpoint=event.checkpoint, step=event.step)
    if bar is not None:
        bar.close()
    return last


def cmd_train(args: argparse.Namespace) -> int:
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
    from napari_medgan.training.inference import generate, load_generator, synthesize_from

    loaded = load_generator(args.checkpoint, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    if loaded.model.conditional:
        if args.condition is None:
            raise CLIError(f"{args.checkpoint}: model {loaded.model.name}/{loaded.model.task} is "
                           "conditional: give --condition FILE")
        is_label = loaded.model.task == "label2image"
        cond = load_volume(args.condition, is_label=is_label)
        mask = load_volume(args.mask, is_label=True) if args.mask else None
        result = synthesize_from(loaded, cond, mask=mask)
        if loaded.model.task == "superres":
            print("superres: voxel size {} -> {} mm (x, y, z)".format(
                "x".join(f"{s:g}" for s in cond.spacing),
                "x".join(f"{s:g}" for s in result.spacing)))
        written.append(save_volume(result, args.out / f"{volume_stem(args.condition)}_"
                                   f"{loaded.model.task}.nii.gz"))
    else:
        reference = load_volume(args.reference) if args.reference else None
        images, labels = generate(loaded, args.n, seed=args.seed, reference=reference)
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
    from napari_medgan.demo import run_demo

    from napari_medgan.demo import DEMO_TRAIN_SECONDS

    budget = DEMO_TRAIN_SECONDS if args.budget is None else args.budget
    run_demo(args.out, steps=args.steps, seed=args.seed, budget_seconds=budget)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from napari_medgan.export import cmd_export_dataset

    return cmd_export_dataset(args)


COMMANDS = {"train": cmd_train, "generate": cmd_generate, "evaluate": cmd_evaluate,
            "export-dataset": cmd_export, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("napari-medgan: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        print(f"napari-medgan: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
