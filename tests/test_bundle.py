"""Model bundles: export, load, round trip, anonymity, refusals, CLI (16^3, a few steps)."""

from __future__ import annotations

import getpass
import json
import re
import shutil
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_medgan.cli import main
from napari_medgan.training.bundle import (
    METADATA_FILE,
    MODEL_FILE,
    README_FILE,
    WEIGHTS_FILE,
    is_bundle,
    load_bundle,
)
from napari_medgan.training.checkpoint import CheckpointError

PATIENT = "DoeJane"  # in the training files' names: must never reach a bundle


def _user_and_host() -> list[str]:
    names = []
    for get in (getpass.getuser, socket.gethostname):
        try:
            names.append(get())
        except (OSError, KeyError):  # no user name in some containers
            pass
    return [n for n in names if n]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_run):
    """A joint dcgan3d run trained on volume files in a folder whose path names the user and
    the host, with a patient name in the file names: everything a bundle must not carry."""
    import dataclasses

    from napari_medgan.data.phantom import make_head_phantom
    from napari_medgan.io import save_volume
    from napari_medgan.training.trainer import Trainer

    root = tmp_path_factory.mktemp("bundle")
    data = root / ("-".join(_user_and_host() + ["scans"]))
    for i in range(3):
        image, labels = make_head_phantom((16,) * 3, seed=i)
        save_volume(image, data / "images" / f"patient_{PATIENT}_{i:03d}.nii.gz")
        save_volume(labels, data / "labels" / f"patient_{PATIENT}_{i:03d}.nii.gz")
    run = tiny_run(root / "run", task="joint")
    run.data = dataclasses.replace(run.data, source=str(data / "images"),
                                   labels=str(data / "labels"))
    for _ in Trainer(run).run():
        pass
    return root / "run"


@pytest.fixture(scope="module")
def bundles(run_dir):
    """The run exported as a folder and as a zip."""
    from napari_medgan.export_model import export_model

    folder = export_model(run_dir, run_dir.parent / "exports" / "head-joint")
    archive = export_model(run_dir, run_dir.parent / "exports" / "head-joint", as_zip=True)
    return folder, archive


def _generate(path, n=2, seed=5):
    from napari_medgan.training.inference import generate, load_generator

    images, labels = generate(load_generator(path, device="cpu"), n, seed=seed)
    return images + labels


# ----------------------------------------------------------------------------- contents
def test_layout_metadata_and_model_card(bundles, run_dir):
    folder, archive = bundles
    assert archive.name == "head-joint.zip" and is_bundle(folder) and is_bundle(archive)
    for name in (METADATA_FILE, MODEL_FILE, WEIGHTS_FILE, README_FILE):
        assert (folder / name).is_file()
    with zipfile.ZipFile(archive) as zf:  # the MONAI archive layout: NAME/... inside
        assert sorted(zf.namelist()) == sorted(f"head-joint/{n}" for n in (
            METADATA_FILE, MODEL_FILE, WEIGHTS_FILE, README_FILE))
        for name in (METADATA_FILE, MODEL_FILE, WEIGHTS_FILE):  # the card names its file
            assert zf.read(f"head-joint/{name}") == (folder / name).read_bytes()
        assert "generate head-joint.zip" in zf.read(f"head-joint/{README_FILE}").decode()
    meta = json.loads((folder / METADATA_FILE).read_text())
    assert (meta["format"], meta["format_version"]) == ("napari-medgan-bundle", 1)
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["latent"]["spatial_shape"] == [16]
    image, labels = fmt["outputs"]["image"], fmt["outputs"]["labels"]
    assert (image["format"], image["num_channels"], image["spatial_shape"]) == \
        ("magnitude", 1, [16, 16, 16])
    assert image["modality"] == "MR" and image["value_range"] == [-1.0, 1.0]
    assert labels["format"] == "labels" and labels["num_channels"] == 8
    assert labels["tensor_channels"] == list(range(1, 9))
    for key in ("type", "dtype", "is_patch_data", "channel_def"):
        assert key in image and key in labels
    # no names in the run: segments.py's defaults, colours included
    assert meta["labels"][1] == {"value": 1, "name": "Segment_1", "color": pytest.approx(
        [0.50, 0.68, 0.50])}
    assert meta["intensity"]["preset"] == "mr" and len(meta["intensity"]["value_range"]) == 2
    assert meta["data"]["volumes"] == 3 and meta["data"]["modality"] == "MR"
    assert meta["data"]["reference_shape_zyx"] == [16, 16, 16]
    assert meta["model"] == {"family": "dcgan3d", "task": "joint",
                             "task_summary": "noise -> image + label map pair",
                             "conditional": False}
    assert meta["training"]["steps"] == 6
    if (run_dir / "history.jsonl").exists():
        assert meta["training"]["wall_seconds"] > 0
    assert meta["figures"]["checkpoint"]["value"] >= 0
    assert meta["figures"]["evaluation"] is None and meta["figures"]["augmentation"] is None

    card = (folder / README_FILE).read_text()
    front = card.split("---")[1]
    assert "library_name: napari-medgan" in front and "license: bsd-3-clause" in front
    assert "pipeline_tag: unconditional-image-generation" in front
    for tag in ("medical-imaging", "3d", "gan", "mr", "joint"):
        assert f"- {tag}\n" in front
    assert "not for diagnosis" in card.lower()
    assert "No evaluation report" in card and "Steps: 6" in card

    model = json.loads((folder / MODEL_FILE).read_text())
    assert "run_config" not in model and model["step"] == 6


def test_bundle_carries_only_the_ema_weights(bundles, run_dir):
    import safetensors.torch

    from napari_medgan.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir)
    saved = safetensors.torch.load_file(bundles[0] / WEIGHTS_FILE)
    ema = ckpt.module_state("ema")
    assert sorted(saved) == sorted(ema)
    for key, value in ema.items():
        assert value.dtype == saved[key].dtype and bool((value == saved[key]).all())


def _texts(name: str, data: bytes) -> str:
    """What of a file could hold a name: its text, or a safetensors file's JSON header."""
    if name.endswith(".safetensors"):
        size = int.from_bytes(data[:8], "little")
        return data[8:8 + size].decode("utf-8")
    return data.decode("utf-8")


def test_no_path_user_host_or_file_name_in_the_bytes(bundles, run_dir):
    folder, archive = bundles
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with zipfile.ZipFile(archive) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    raw_zip = archive.read_bytes()
    long_ones = {str(run_dir.parent), str(run_dir.parent.resolve()), str(Path.home()),
                 PATIENT, "scans"}
    for text in [raw_zip, *files.values(), *members.values()]:
        for needle in long_ones:
            assert needle.encode() not in text, needle
    words = [re.compile(rf"(?<![A-Za-z0-9]){re.escape(n)}(?![A-Za-z0-9])", re.I)
             for n in _user_and_host()]
    for name, data in [*files.items(), *members.items()]:
        text = _texts(name, data)
        assert "/tmp" not in text and "\\" not in text, name
        for word in words:
            assert not word.search(text), (name, word.pattern)
    for name in members:  # member names: only the bundle's name and its fixed layout
        assert name.startswith("head-joint/")


# ----------------------------------------------------------------------------- round trip
def test_round_trip_gives_bit_identical_samples(bundles, run_dir):
    reference = _generate(run_dir)
    for bundle in bundles:
        again = _generate(bundle)
        assert len(again) == len(reference) == 4  # two images, two label maps
        for a, b in zip(reference, again):
            assert a.array.dtype == b.array.dtype and np.array_equal(a.array, b.array)
            assert np.array_equal(a.spacing, b.spacing) and np.array_equal(a.origin, b.origin)
            assert np.array_equal(a.direction, b.direction)


def test_loaded_model_names_the_bundle(bundles):
    from napari_medgan.training.inference import load_generator

    loaded = load_generator(bundles[1], device="cpu")
    assert loaded.path == bundles[1] and loaded.step == 6 and loaded.model.task == "joint"


# ----------------------------------------------------------------------------- refusals
def _edit_json(name, change):
    def edit(folder: Path) -> None:
        doc = json.loads((folder / name).read_text())
        change(doc)
        (folder / name).write_text(json.dumps(doc))
    return edit


def _flip_weight_byte(folder: Path) -> None:
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[-3] ^= 0x40
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))


TAMPERED = [
    ("future model.json", _edit_json(MODEL_FILE, lambda d: d.update(format_version=2)),
     "model.json", "'format_version'"),
    ("future metadata", _edit_json(METADATA_FILE, lambda d: d.update(format_version=2)),
     "metadata.json", "'format_version'"),
    ("not ours", _edit_json(METADATA_FILE, lambda d: d.update(format="monai")),
     "metadata.json", "'format'"),
    ("unknown field", _edit_json(MODEL_FILE, lambda d: d.update(comment="hi")),
     "model.json", "'comment'"),
    ("missing field", _edit_json(MODEL_FILE, lambda d: d.pop("normalizer")),
     "model.json", "'normalizer'"),
    ("bad step", _edit_json(MODEL_FILE, lambda d: d.update(step="six")), "model.json", "'step'"),
    ("bad normalizer", _edit_json(MODEL_FILE, lambda d: d["normalizer"].update(low="x")),
     "model.json", "'normalizer'"),
    ("unknown model field", _edit_json(MODEL_FILE, lambda d: d["model_config"].update(depth=3)),
     "model.json", "'depth'"),
    ("weights do not fit", _edit_json(MODEL_FILE, lambda d: d["model_config"].update(channels=16)),
     "model.json", "incompatible with the model config"),
    ("other layout", _edit_json(MODEL_FILE, lambda d: d.update(model_layout=7)),
     "model.json", "model_layout"),
    ("weights record", _edit_json(MODEL_FILE, lambda d: d.pop("weights")), "model.json",
     "'weights'"),
    ("changed weights", _flip_weight_byte, "model.safetensors", "'weights.sha256'"),
    ("missing weights", lambda f: (f / WEIGHTS_FILE).unlink(), "model.safetensors", "missing"),
    ("missing metadata", lambda f: (f / METADATA_FILE).unlink(), "metadata.json", "missing"),
    ("broken JSON", lambda f: (f / MODEL_FILE).write_text("{"), "model.json", "invalid JSON"),
]


@pytest.mark.parametrize("label,tamper,file,field", TAMPERED, ids=[t[0] for t in TAMPERED])
def test_tampered_or_future_bundle_is_refused_in_one_line(bundles, tmp_path, label, tamper,
                                                          file, field):
    from napari_medgan.training.inference import load_generator

    bad = shutil.copytree(bundles[0], tmp_path / "bad")
    tamper(bad)
    with pytest.raises(CheckpointError) as info:
        load_generator(bad, device="cpu")
    message = str(info.value)
    assert "\n" not in message and file in message and field in message, message
    if "future" in label:
        assert "upgrade napari-medgan" in message


def test_tampered_zip_is_refused_naming_the_member(bundles, tmp_path):
    _, archive = bundles
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith(MODEL_FILE):
                doc = json.loads(data)
                doc["format_version"] = 9
                data = json.dumps(doc).encode()
            dst.writestr(name, data)
    with pytest.raises(CheckpointError, match=r"bad\.zip/head-joint/models/model\.json: field "
                                              r"'format_version' is 9"):
        load_bundle(bad)


def _zip_with(path: Path, bundle: Path, extra: dict[str, bytes], prefix="m/") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for file in bundle.rglob("*"):
            if file.is_file():
                zf.writestr(prefix + str(file.relative_to(bundle)), file.read_bytes())
        for name, data in extra.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


@pytest.mark.parametrize("member", ["../evil.txt", "m/../../evil.txt", "/etc/evil",
                                    "C:/evil.txt", "m\\..\\evil.txt"])
def test_zip_with_unsafe_member_names_is_refused(bundles, tmp_path, member):
    bad = _zip_with(tmp_path / "bad.zip", bundles[0], {member: b"x"})
    with pytest.raises(CheckpointError, match="refusing the archive") as info:
        load_bundle(bad)
    assert "\n" not in str(info.value)
    assert not (tmp_path.parent / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_zip_with_a_link_duplicates_or_too_much_is_refused(bundles, tmp_path, monkeypatch):
    import napari_medgan.training.bundle as bundle

    link = zipfile.ZipInfo("m/docs/link")
    link.external_attr = (0o120777 << 16)
    bad = _zip_with(tmp_path / "link.zip", bundles[0], {})
    with zipfile.ZipFile(bad, "a") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(CheckpointError, match="symbolic link"):
        load_bundle(bad)
    with pytest.warns(UserWarning):  # zipfile warns about the duplicate as it writes it
        dup = _zip_with(tmp_path / "dup.zip", bundles[0], {"m/" + MODEL_FILE: b"{}"})
    with pytest.raises(CheckpointError, match="appears twice"):
        load_bundle(dup)
    monkeypatch.setattr(bundle, "MAX_BUNDLE_BYTES", 1000)
    with pytest.raises(CheckpointError, match="unpack to"):
        load_bundle(bundles[1])


def test_zip_that_is_not_a_bundle_is_refused(tmp_path):
    from napari_medgan.training.inference import load_generator

    other = tmp_path / "weights.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x04K\x01.")  # what torch.save writes
    assert not is_bundle(other)
    with pytest.raises(CheckpointError, match="not a napari-medgan model bundle"):
        load_generator(other)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a zip archive"):
        load_generator(tmp_path / "junk.zip")


# ----------------------------------------------------------------------------- command line
def test_export_model_and_generate_from_the_bundle(run_dir, tmp_path, capsys):
    from napari_medgan.io import load_volume

    out = tmp_path / "shared" / "head"
    assert main(["export-model", str(run_dir), "--out", str(out), "--zip"]) == 0
    archive = tmp_path / "shared" / "head.zip"
    assert capsys.readouterr().out.strip() == str(archive)
    assert sorted(p.name for p in archive.parent.iterdir()) == ["head.zip"]  # no leftovers
    for source, folder in ((archive, "from_bundle"), (run_dir, "from_run")):
        assert main(["generate", str(source), "--n", "2", "--seed", "3", "--out",
                     str(tmp_path / folder)]) == 0
    for name in ("synthetic_000.nii.gz", "synthetic_001_labels.nii.gz"):
        a, b = (load_volume(tmp_path / f / name) for f in ("from_bundle", "from_run"))
        assert np.array_equal(a.array, b.array) and np.allclose(a.origin, b.origin)

    capsys.readouterr()
    assert main(["export-model", str(run_dir), "--out", str(archive)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already exists" in err and "--overwrite" in err
    assert main(["export-model", str(run_dir), "--out", str(archive), "--overwrite"]) == 0
    (tmp_path / "notes").mkdir()
    assert main(["export-model", str(run_dir), "--out", str(tmp_path / "notes"),
                 "--overwrite"]) == 2
    assert "not a model bundle" in capsys.readouterr().err


def test_generate_refuses_a_tampered_bundle_in_one_line(bundles, tmp_path, capsys):
    bad = shutil.copytree(bundles[0], tmp_path / "bad")
    _edit_json(MODEL_FILE, lambda d: d.update(format_version=3))(bad)
    assert main(["generate", str(bad), "--out", str(tmp_path / "gen")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.json" in err and "format_version" in err


def test_failed_export_leaves_nothing(run_dir, tmp_path, monkeypatch):
    from napari_medgan import export_model as module

    def broken(*args, **kwargs):
        raise OSError("simulated write failure")

    monkeypatch.setattr(module.zipfile.ZipFile, "writestr", broken)
    with pytest.raises(OSError, match="simulated"):
        module.export_model(run_dir, tmp_path / "m.zip")
    monkeypatch.undo()
    import napari_medgan.training.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "_fsync", broken)  # inside the folder's fill
    with pytest.raises(OSError, match="simulated"):
        module.export_model(run_dir, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_train_init_from_a_bundle_fine_tunes(bundles, tmp_path, capsys):
    """The generator starts from the bundle's EMA weights (a learning rate of 1e-12 keeps
    them), the discriminator anew; the architecture comes from the bundle, not the flags."""
    import torch

    from napari_medgan.training.checkpoint import load_checkpoint

    out = tmp_path / "finetune"
    assert main(["train", "--init", str(bundles[1]), "--out", str(out), "--data", "phantom",
                 "--phantom-count", "2", "--phantom-size", "16", "--patch-size", "16",
                 "--channels", "4", "--steps", "2", "--batch-size", "2", "--lr-g", "1e-12",
                 "--device", "cpu",
                 "--checkpoint-every", "2", "--preview-every", "2", "--log-every", "1",
                 "--memory-check", "off"]) == 0
    assert "fine-tuning from" in capsys.readouterr().err
    tuned = load_checkpoint(out)
    assert tuned.state["step"] == 2 and "discriminator" in tuned.module_names
    assert tuned.model_config().channels == 8  # the bundle's, not --channels 4
    start = load_bundle(bundles[1]).module_state("ema")
    generator = tuned.module_state("generator")
    params = [k for k in start if "running_" not in k and "num_batches" not in k]
    assert params and all(torch.allclose(start[k], generator[k], atol=1e-9) for k in params)


# ----------------------------------------------------------------------------- napari reader
def test_reader_claims_bundles_and_nothing_else(bundles, tmp_path):
    from napari_medgan._reader import napari_get_bundle_reader, napari_get_reader, open_bundle

    folder, archive = bundles
    assert napari_get_bundle_reader(str(folder)) is open_bundle
    assert napari_get_bundle_reader(str(archive)) is open_bundle
    assert napari_get_reader(str(archive)) is None and napari_get_reader(str(folder)) is None
    (tmp_path / "plain").mkdir()
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "x")
    for path in (tmp_path / "plain", tmp_path / "other.zip", tmp_path / "missing.zip"):
        assert napari_get_bundle_reader(str(path)) is None
    assert napari_get_bundle_reader([str(archive), str(archive)]) is None


# ----------------------------------------------------------------------------- every task
FORMATS = [  # (family, task, input name: format and channels, outputs: name -> channels)
    ("dcgan3d", "synthesis", ("latent", "latent", 0), {"image": 1}),
    ("hagan3d", "joint", ("latent", "latent", 0), {"image": 1, "labels": 3}),
    ("pix2pix3d", "label2image", ("labels", "labels", 3), {"image": 1}),
    ("pix2pix3d", "translate", ("image", "magnitude", 1), {"image": 1}),
    ("pix2pix3d", "denoise", ("image", "magnitude", 1), {"image": 1}),
    ("pix2pix3d", "superres", ("image", "magnitude", 1), {"image": 1}),
    ("pix2pix3d", "inpaint", ("image", "magnitude", 2), {"image": 1}),
]


@pytest.mark.parametrize("family,task,given,made", FORMATS, ids=[f[1] for f in FORMATS])
def test_network_data_format_of_every_task(family, task, given, made):
    from napari_medgan.bundle_metadata import label_table, network_data_format
    from napari_medgan.config import ModelConfig
    from napari_medgan.io.preprocess import Normalizer

    model = ModelConfig(name=family, task=task, patch_size=32, num_classes=3, latent_dim=16)
    fmt = network_data_format(model, Normalizer.ct(), None, label_table({}, model))
    (name, spec), = fmt["inputs"].items()
    assert (name, spec["format"], spec["num_channels"]) == given
    assert {k: v["num_channels"] for k, v in fmt["outputs"].items()} == made
    image = fmt["outputs"]["image"]
    assert image["modality"] == "CT" and image["spatial_shape"] == [32, 32, 32]
    assert image["is_patch_data"] == (family != "hagan3d")  # hagan3d draws whole volumes
    if "labels" in fmt["outputs"] or name == "labels":
        labels = fmt["outputs"].get("labels", spec)
        assert labels["channel_def"] == {"0": "background", "1": "Segment_1", "2": "Segment_2"}


def test_conditional_bundle_round_trip_and_card(tmp_path, tiny_run):
    from napari_medgan.data.phantom import make_head_phantom
    from napari_medgan.export_model import export_model
    from napari_medgan.training.inference import load_generator, synthesize_from
    from napari_medgan.training.trainer import Trainer

    run = tiny_run(tmp_path / "run", model="pix2pix3d", task="label2image", steps=2)
    for _ in Trainer(run).run():
        pass
    archive = export_model(tmp_path / "run", tmp_path / "l2i.zip")
    meta = json.loads(load_bundle_member(archive, METADATA_FILE))
    assert meta["network_data_format"]["inputs"]["labels"]["value_range"] == [0.0, 1.0]
    assert meta["labels"][1]["name"] == "scalp"  # phantom runs name their classes
    assert meta["data"]["source"].startswith("built-in head phantom")
    assert meta["figures"]["checkpoint"]["definition"].startswith("mean absolute error")
    card = load_bundle_member(archive, README_FILE)
    assert "pipeline_tag: image-to-image" in card and "Checkpoint figure at step 2" in card
    _, labels = make_head_phantom((20, 18, 22), seed=9)
    a = synthesize_from(load_generator(tmp_path / "run", device="cpu"), labels)
    b = synthesize_from(load_generator(archive, device="cpu"), labels)
    assert np.array_equal(a.array, b.array) and np.array_equal(a.origin, b.origin)


def load_bundle_member(archive: Path, name: str) -> str:
    with zipfile.ZipFile(archive) as zf:
        return zf.read(f"{archive.stem}/{name}").decode()


def test_figures_are_the_runs_own_or_said_to_be_absent(tmp_path):
    from napari_medgan.bundle_metadata import run_figures
    from napari_medgan.config import ModelConfig
    from napari_medgan.model_card import figure_lines

    model = ModelConfig(name="pix2pix3d", task="denoise", patch_size=16)
    state = {"step": 40, "metric": 0.125, "validation": {
        "start": 0.3, "start_step": 0, "best": 0.1, "best_step": 30, "last": 0.2,
        "last_step": 40}}
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "figures.json").write_text(json.dumps({  # the demo's, for this run
        "checkpoint": str(run / "checkpoints" / "final"), "quality": {
            "diversity_ratio": 0.97, "memorized": "0/8 above 0.9 (ncc)",
            "feature_extractor": "/somewhere/private.safetensors"}}))
    figures = run_figures(state, model, run)
    assert figures["checkpoint"]["value"] == 0.125 and figures["validation"]["best"] == 0.1
    assert figures["evaluation"] == {"source": "figures.json", "diversity_ratio": 0.97,
                                     "memorized": "0/8 above 0.9"}
    text = "\n".join(figure_lines(figures))
    assert "0.125" in text and "0.1 at step 30" in text and "diversity_ratio 0.97" in text
    assert "private" not in text and figures["augmentation"] is None

    # a lower later score that did not beat the start beyond the noise: the start was kept
    state["validation"].update(best=0.3, best_step=0, lowest=0.29, lowest_step=30)
    text = "\n".join(figure_lines(run_figures(state, model, run)))
    assert "0.3 at step 0" in text and "step 30 scored 0.29" in text
    assert "starting generator was kept" in text

    nothing = run_figures({"step": 3}, model, None)
    assert nothing == {"checkpoint": None, "validation": None, "evaluation": None,
                       "augmentation": None}
    text = "\n".join(figure_lines(nothing))
    assert "No evaluation report" in text and "No segmentation-augmentation" in text


def test_dicom_patient_fields_never_reach_a_bundle(tmp_path, tiny_run):
    """Trained on DICOM series whose headers name a patient: the bundle has none of it."""
    import dataclasses

    import SimpleITK as sitk

    from napari_medgan.data.phantom import make_head_phantom
    from napari_medgan.export_model import export_model
    from napari_medgan.io import load_volume
    from napari_medgan.io.writers import save_dicom_series
    from napari_medgan.training.trainer import Trainer

    secrets = {"0010|0010": "SMITH^ALICE", "0010|0020": "PID4711", "0008|0080": "ST MUNGOS"}
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for i in range(2):
        image, _ = make_head_phantom((16,) * 3, seed=i, modality="ct")
        image = image.with_array(np.round(image.array).astype(np.int16))
        for path in save_dicom_series(image, tmp_path / "dicom" / f"series_{i}", modality="CT"):
            slice_image = sitk.ReadImage(str(path))
            for key, value in secrets.items():
                slice_image.SetMetaData(key, value)
            writer.SetFileName(str(path))
            writer.Execute(slice_image)
    series_uid = load_volume(tmp_path / "dicom" / "series_0").meta["series_uid"]
    run = tiny_run(tmp_path / "run", steps=2)
    run.data = dataclasses.replace(run.data, source=str(tmp_path / "dicom"), preset="ct")
    for _ in Trainer(run).run():
        pass
    archive = export_model(tmp_path / "run", tmp_path / "ct.zip")
    with zipfile.ZipFile(archive) as zf:
        texts = [_texts(n, zf.read(n)) for n in zf.namelist()]
    for needle in [*secrets.values(), "SMITH", "ALICE", series_uid, "series_0", "dicom"]:
        assert all(needle.lower() not in t.lower() for t in texts), needle
    meta = json.loads(load_bundle_member(archive, METADATA_FILE))
    assert meta["data"]["modality"] == "CT" and meta["data"]["volumes"] == 2
    assert meta["intensity"]["units"] == "HU"


def test_the_card_says_how_the_model_was_trained(run_dir, tmp_path):
    from napari_medgan.cli import main

    recipe = "napari-medgan train --config resources/pretrained_head.yaml --out runs/head"
    assert main(["export-model", str(run_dir), "--out", str(tmp_path / "card"),
                 "--recipe", recipe, "--limitation", "little variety between samples"]) == 0
    card = (tmp_path / "card" / "docs" / "README.md").read_text()
    assert f"Trained with:\n\n```bash\n{recipe}\n```" in card
    assert "## Limitations\n\n- little variety between samples\n" in card
