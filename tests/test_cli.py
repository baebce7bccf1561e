"""The command line end to end at 16^3: train, generate, errors, torchrun with gloo."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_medgan.cli import TRAIN_OVERRIDES, build_parser, main

TINY = ["--data", "phantom", "--phantom-count", "3", "--phantom-size", "16", "--patch-size", "16",
        "--channels", "8", "--latent-dim", "16", "--batch-size", "2", "--device", "cpu",
        "--checkpoint-every", "2", "--preview-every", "2", "--log-every", "1",
        "--memory-check", "off"]


def test_train_then_generate(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "3", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "step 3/3" in err and "checkpoint (final)" in err
    out = tmp_path / "gen"
    assert main(["generate", str(run), "--n", "3", "--seed", "7", "--out", str(out)]) == 0
    files = sorted(out.glob("*.nii.gz"))
    assert len(files) == 3

    from napari_medgan.io import load_volume
    from napari_medgan.training.checkpoint import load_checkpoint

    geo = load_checkpoint(run).state["geometry"]
    vol = load_volume(files[0])
    np.testing.assert_allclose(vol.spacing, geo["spacing"], atol=1e-4)
    np.testing.assert_allclose(vol.origin, geo["origin"], atol=1e-4)
    # Same seed, same volumes (up to float rounding: a batch of 1 vs 3 runs other kernels).
    again = tmp_path / "again"
    main(["generate", str(run), "--n", "1", "--seed", "7", "--out", str(again)])
    np.testing.assert_allclose(load_volume(again / "synthetic_000.nii.gz").array, vol.array,
                               rtol=1e-5, atol=1e-4)


def test_conditional_generate_runs_on_a_whole_volume(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--model", "pix2pix3d", "--task", "label2image",
                 "--steps", "2", "--out", str(run)]) == 0
    from napari_medgan.data.phantom import make_head_phantom
    from napari_medgan.io import load_volume, save_volume

    _, labels = make_head_phantom(shape=(20, 24, 28), spacing=(2.0, 2.0, 2.5), seed=5)
    cond = save_volume(labels, tmp_path / "case_label.nii.gz")
    out = tmp_path / "gen"
    assert main(["generate", str(run), "--condition", str(cond), "--out", str(out)]) == 0
    result = load_volume(next(out.glob("*.nii.gz")))
    assert result.shape == labels.shape  # sliding windows cover a non-cubic, non-multiple size
    np.testing.assert_allclose(result.spacing, labels.spacing, atol=1e-4)
    np.testing.assert_allclose(result.origin, labels.origin, atol=1e-4)

    # the default averages the 8 flips of the input; --no-flip-ensemble is one pass
    from napari_medgan.training.inference import load_generator, synthesize_from

    loaded = load_generator(run, device="cpu")
    one, eight = (synthesize_from(loaded, load_volume(cond, is_label=True),
                                  flip_ensemble=f).array for f in (False, True))
    tol = 1e-6 * float(np.abs(eight).max())
    assert np.abs(one - eight).max() > 10 * tol  # the two differ for this model
    for flags, expected in (([], eight), (["--no-flip-ensemble"], one)):
        out = tmp_path / f"gen{len(flags)}"
        assert main(["generate", str(run), "--condition", str(cond), "--out", str(out),
                     *flags]) == 0
        np.testing.assert_allclose(load_volume(next(out.glob("*.nii.gz"))).array, expected,
                                   rtol=0, atol=tol)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--patch-size", "24"], "model.patch_size"),
        (["train", "--model", "dcgan3d", "--task", "denoise"], "model.task"),
        (["train", "--data", "/no/such/folder"], "/no/such/folder"),
        (["train", "--loss", "wgan"], "train.loss"),
        (["train", "--val-fraction", "0.7"], "data.val_fraction"),
        (["train", "--superres-factors", "3"], "superres_factors"),
        (["generate", "/no/such/run", "--out", "x"], "/no/such/run"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(argv, expected, capsys, tmp_path):
    argv = [a if a != "x" else str(tmp_path / "x") for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "run"), "--steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err


def test_a_second_run_into_a_run_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "1", "--out", str(out)]) == 0
    weights = sorted(out.rglob("weights.safetensors"))
    capsys.readouterr()
    assert main(["train", *TINY, "--steps", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(out) in err and "already holds a run" in err and len(err.splitlines()) == 1
    assert sorted(out.rglob("weights.safetensors")) == weights  # nothing of the old run lost
    assert main(["train", *TINY, "--steps", "2", "--out", str(out), "--resume"]) == 0


def test_generate_refuses_a_pickle(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    import pickle

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil.write_bytes(pickle.dumps(Evil()))
    assert main(["generate", str(evil), "--out", str(tmp_path / "o")]) == 2
    assert "unpickle" in capsys.readouterr().err
    assert not marker.exists()


def test_flags_are_derived_from_the_config_fields():
    """Every field declared with opt() is a flag that lands in its field, and nothing else is."""
    import dataclasses

    from napari_medgan.cli import build_run_config
    from napari_medgan.config import SECTIONS

    declared = {(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)
                if "help" in f.metadata}
    assert set(TRAIN_OVERRIDES.values()) == declared
    assert TRAIN_OVERRIDES["model"] == ("model", "name")
    assert TRAIN_OVERRIDES["data"] == ("data", "source")
    args = build_parser().parse_args(["train", "--val-fraction", "0.25", "--val-every", "7",
                                      "--superres-factors", "1x1x4", "--lr-g", "0.001"])
    run = build_run_config(args)
    assert (run.data.val_fraction, run.train.val_every) == (0.25, 7)
    assert run.model.superres_factors == (1, 1, 4) and run.train.lr_g == 0.001


def test_help_documents_every_flag(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    text = capsys.readouterr().out
    for dest in TRAIN_OVERRIDES:
        assert "--" + dest.replace("_", "-") in text
    for flag in ("--config", "--out", "--resume", "--init"):
        assert flag in text


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("napari-medgan")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    for cmd in ("train", "generate", "evaluate", "demo"):
        assert cmd in out.stdout


@pytest.mark.parametrize("model", [
    [],  # dcgan3d: batch norm in the generator, synchronised across the ranks
    ["--model", "hagan3d", "--volume-shape", "32,32,64", "--slab-size", "8",
     "--phantom-size", "32"],  # hierarchical: two discriminators in one DDP module
], ids=["dcgan3d", "hagan3d"])
def test_torchrun_two_gloo_processes(tmp_path, model):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "napari_medgan", "train", *TINY, *model, "--steps", "3",
           "--out", str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes" in proc.stderr
    from napari_medgan.training.checkpoint import load_checkpoint

    assert load_checkpoint(run).state["step"] == 3
    # Only rank 0 wrote: each record once, not twice.
    lines = (run / "history.jsonl").read_text().splitlines()
    assert len(lines) == len({line for line in lines})


def test_evaluate_writes_report_and_picture(tmp_path, capsys):
    import json

    from napari_medgan.data.phantom import make_head_phantom
    from napari_medgan.io import save_volume

    for i in range(3):
        save_volume(make_head_phantom((32, 32, 32), seed=i)[0], tmp_path / "real" / f"r{i}.nii.gz")
        save_volume(make_head_phantom((32, 32, 32), seed=10 + i)[0],
                    tmp_path / "fake" / f"f{i}.nii.gz")
    out = tmp_path / "report.json"
    assert main(["evaluate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                 "--reference-pairs", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.rsplit("report:", 1)[0])
    report = json.loads(out.read_text())
    assert printed["diversity_ratio"] == report["metrics"]["diversity_ratio"]["value"]
    assert "random" in printed["feature_extractor"].lower()
    assert report["paired"]["mean"]["psnr"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000
