"""nnU-Net v2 export: layout, dataset.json, manifest, geometry of every pair, and the checker."""

from __future__ import annotations

import argparse
import json
import re
import shutil

import numpy as np
import pytest

from napari_medgan.data.phantom import PHANTOM_LABELS, make_head_phantom
from napari_medgan.export import (
    MANIFEST_FILE,
    ExportError,
    add_export_parser,
    check_nnunet_dataset,
    cmd_export_dataset,
    export_nnunet_dataset,
)
from napari_medgan.io import load_volume, save_volume


def _train(out, model: str, task: str, steps: int = 2, channels: int = 8):
    """A few steps at 16^3 on phantoms (as tests/conftest.py's ``tiny_run``)."""
    import torch

    from napari_medgan.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from napari_medgan.training.trainer import Trainer

    torch.manual_seed(0)
    run = RunConfig(
        data=DataConfig(source="phantom", phantom_count=3, phantom_size=16),
        model=ModelConfig(name=model, task=task, patch_size=16, channels=channels,
                          latent_dim=16),
        train=TrainConfig(memory_check="off", steps=steps, batch_size=2, preview_every=3, checkpoint_every=3,
                          log_every=1, device="cpu", seed=0),
        out=str(out))
    list(Trainer(run).run())
    return out


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("joint"), "dcgan3d", "joint")


@pytest.fixture(scope="module")
def label2image_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("l2i"), "pix2pix3d", "label2image", steps=1,
                  channels=4)


@pytest.fixture(scope="module")
def real_cases(tmp_path_factory):
    """Two real phantom cases: one as files, one as Volumes."""
    folder = tmp_path_factory.mktemp("real")
    (img0, lab0), (img1, lab1) = (make_head_phantom((16, 16, 16), seed=s) for s in (100, 101))
    paths = (save_volume(img0, folder / "r0.nii.gz"), save_volume(lab0, folder / "r0_seg.nii.gz"))
    return [paths[0], img1], [paths[1], lab1]


@pytest.fixture(scope="module")
def joint_dataset(joint_run, real_cases, tmp_path_factory):
    out = tmp_path_factory.mktemp("nnunet_raw")
    result = export_nnunet_dataset(out, checkpoint=joint_run, n=3, seed=7,
                                   real_images=real_cases[0], real_labels=real_cases[1],
                                   device="cpu")
    return out, result


def _pairs(dataset):
    import nibabel as nib

    for label_path in sorted((dataset / "labelsTr").iterdir()):
        case = label_path.name[: -len(".nii.gz")]
        yield case, nib.load(dataset / "imagesTr" / f"{case}_0000.nii.gz"), nib.load(label_path)


# --------------------------------------------------------------------------- joint model
def test_joint_export_layout_dataset_json_and_geometry(joint_dataset, joint_run):
    out, result = joint_dataset
    dataset = out / "Dataset501_MedGANSynthetic"
    assert result["dataset_dir"] == dataset and check_nnunet_dataset(dataset) == []
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MR"}
    assert meta["labels"] == {name: value for value, name in PHANTOM_LABELS.items()}
    assert meta["numTraining"] == 5 and meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == [
        "real_000_0000.nii.gz", "real_001_0000.nii.gz",
        "syn_000_0000.nii.gz", "syn_001_0000.nii.gz", "syn_002_0000.nii.gz"]
    pairs = list(_pairs(dataset))
    assert len(pairs) == 5
    for case, image, label in pairs:
        assert image.shape == label.shape == (16, 16, 16), case
        assert np.array_equal(image.affine, label.affine), case
        assert np.array_equal(image.header.get_qform(), label.header.get_qform()), case
        values = np.unique(np.asarray(label.dataobj))
        assert label.get_data_dtype() == np.uint8 and set(values) <= set(PHANTOM_LABELS), case
    real0 = load_volume(out / ".." / out.name / dataset.name / "imagesTr" / "real_000_0000.nii.gz")
    source = load_volume(result["manifest"]["cases"][3]["image_source"])
    assert np.allclose(real0.affine_ras(), source.affine_ras()) and np.array_equal(
        real0.array, source.array)  # real cases are copied with their geometry
    assert [p.name for p in out.iterdir()] == [dataset.name]  # no staging leftovers


def test_manifest_says_which_cases_are_synthetic(joint_dataset, joint_run, real_cases):
    out, result = joint_dataset
    manifest = json.loads((result["dataset_dir"] / MANIFEST_FILE).read_text())
    assert manifest == result["manifest"]
    assert manifest["package_version"] and manifest["created"] and manifest["seed"] == 7
    syn = [c for c in manifest["cases"] if c["kind"] == "synthetic"]
    real = [c for c in manifest["cases"] if c["kind"] == "real"]
    assert [c["case"] for c in syn] == ["syn_000", "syn_001", "syn_002"]
    assert [c["sample_index"] for c in syn] == [0, 1, 2]
    for c in syn:
        assert c["seed"] == 7 and c["step"] == 2 and c["condition"] is None
        assert c["checkpoint"].startswith(str(joint_run.resolve()))
        assert (result["dataset_dir"] / c["image"]).is_file()
    assert real[0]["image_source"] == str(real_cases[0][0])
    assert real[1]["image_source"] == real_cases[0][1].source


def test_same_seed_same_cases_and_overwrite(joint_dataset, joint_run, tmp_path):
    out, result = joint_dataset
    with pytest.raises(ExportError, match="Dataset501_MedGANSynthetic: dataset folder already"):
        export_nnunet_dataset(out, checkpoint=joint_run, n=1)
    copy = tmp_path / "raw"
    shutil.copytree(out, copy)
    again = export_nnunet_dataset(copy, checkpoint=joint_run, n=3, seed=7, overwrite=True,
                                  device="cpu")
    assert again["dataset_json"]["numTraining"] == 3  # replaced: the real cases are gone
    # the same weights name the model, wherever the checkpoint lies
    digest = result["manifest"]["checkpoint"]["generator_sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert again["manifest"]["checkpoint"]["generator_sha256"] == digest
    for i in range(3):
        name = f"imagesTr/syn_{i:03d}_0000.nii.gz"
        assert np.array_equal(load_volume(copy / again["dataset_dir"].name / name).array,
                              load_volume(result["dataset_dir"] / name).array)
    other = tmp_path / "raw" / "Dataset502_Other"
    (other / "notes").mkdir(parents=True)
    with pytest.raises(ExportError, match="not an nnU-Net dataset folder"):
        export_nnunet_dataset(copy, checkpoint=joint_run, n=1, dataset_id=502, name="Other",
                              overwrite=True)


def test_weights_digest_follows_the_weights_not_the_module():
    import torch

    from napari_medgan.export import weights_sha256

    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    assert weights_sha256(a) != weights_sha256(b)
    b.load_state_dict(a.state_dict())
    assert weights_sha256(a) == weights_sha256(b)
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert weights_sha256(a) != weights_sha256(b)


# --------------------------------------------------------------------------- label2image
def test_label2image_images_take_the_label_maps_geometry(label2image_run, tmp_path):
    _, lab_a = make_head_phantom((16, 20, 24), seed=3)
    _, lab_b = make_head_phantom((16, 20, 24), spacing=(9.0, 11.0, 14.0), seed=4)
    lab_b.origin = lab_b.origin + np.array([5.0, -3.0, 2.0])
    path_b = save_volume(lab_b, tmp_path / "edited_seg.nii.gz")
    result = export_nnunet_dataset(tmp_path / "raw", checkpoint=label2image_run, n=None,
                                   conditions=[lab_a, path_b], dataset_id=7, name="L2I",
                                   label_names=[PHANTOM_LABELS[i] for i in range(1, 8)],
                                   device="cpu")
    dataset = result["dataset_dir"]
    assert dataset.name == "Dataset007_L2I" and check_nnunet_dataset(dataset) == []
    assert result["dataset_json"]["numTraining"] == 2
    pairs = list(_pairs(dataset))
    for (case, image, label), cond in zip(pairs, (lab_a, load_volume(path_b))):
        assert image.shape == label.shape == (24, 20, 16)  # NIfTI (x, y, z) of a (16, 20, 24)
        assert np.allclose(image.affine, cond.affine_ras(), atol=1e-4), case
        assert np.array_equal(image.affine, label.affine), case
        assert np.array_equal(np.asarray(label.dataobj).transpose(2, 1, 0), cond.array), case
    cases = result["manifest"]["cases"]
    assert [c["condition"] for c in cases] == [lab_a.source, str(path_b)]
    assert all(c["kind"] == "synthetic" and c["step"] == 1 for c in cases)


def test_a_two_stage_model_exports_its_samples_or_its_image_stage_on_given_maps(tmp_path):
    """Without label maps a two-stage model exports pairs it draws; with them, each map and
    the image its stage 2 draws for it, in the map's geometry."""
    from napari_medgan.training.inference import load_generator, synthesize_from

    run = _train(tmp_path / "ts", "twostage3d", "joint")
    drawn = export_nnunet_dataset(tmp_path / "a", checkpoint=run, n=2, device="cpu")
    assert drawn["dataset_json"]["numTraining"] == 2
    assert [c["condition"] for c in drawn["manifest"]["cases"]] == [None, None]
    _, lab = make_head_phantom((16, 20, 24), spacing=(2.0, 2.5, 3.0), seed=3)
    given = export_nnunet_dataset(tmp_path / "b", checkpoint=run, n=None, conditions=[lab],
                                  device="cpu")
    assert check_nnunet_dataset(given["dataset_dir"]) == []
    (case, image, label), = _pairs(given["dataset_dir"])
    assert np.array_equal(np.asarray(label.dataobj).transpose(2, 1, 0), lab.array)
    assert np.allclose(image.affine, lab.affine_ras(), atol=1e-4)
    expected = synthesize_from(load_generator(run, device="cpu"), lab).array
    np.testing.assert_allclose(np.asarray(image.dataobj).transpose(2, 1, 0), expected,
                               rtol=1e-4, atol=1e-4)
    assert given["manifest"]["cases"][0]["condition"] == lab.source


def test_models_and_inputs_that_cannot_make_pairs(joint_run, label2image_run, tmp_path):
    _, lab = make_head_phantom((16, 16, 16), seed=1)
    with pytest.raises(ExportError, match="conditions are for label2image and two-stage"):
        export_nnunet_dataset(tmp_path, checkpoint=joint_run, n=1, conditions=[lab])
    with pytest.raises(ExportError, match="sample count"):
        export_nnunet_dataset(tmp_path, checkpoint=joint_run, n=None)
    with pytest.raises(ExportError, match="needs label maps"):
        export_nnunet_dataset(tmp_path, checkpoint=label2image_run, n=2)
    with pytest.raises(ExportError, match="2 cases asked but 1 condition"):
        export_nnunet_dataset(tmp_path, checkpoint=label2image_run, n=2, conditions=[lab])
    img, _ = make_head_phantom((16, 16, 16), seed=2)
    moved = lab.with_array(lab.array, origin=lab.origin + 1.0)
    with pytest.raises(ExportError, match="case real_000: image and label map differ in "
                                          "geometry: origin"):
        export_nnunet_dataset(tmp_path, checkpoint=joint_run, n=1, real_images=[img],
                              real_labels=[moved])
    with pytest.raises(ExportError, match=r"case real_000: label values \[9\]"):
        export_nnunet_dataset(tmp_path, checkpoint=joint_run, n=1, real_images=[img],
                              real_labels=[lab.with_array(lab.array * 0 + 9)])
    with pytest.raises(ExportError, match="1 image"):
        export_nnunet_dataset(tmp_path, checkpoint=joint_run, n=1, real_images=[img],
                              real_labels=[])
    for kwargs, word in (({"dataset_id": 1000}, "dataset_id"), ({"name": "a b"}, "name"),
                         ({"file_ending": ".png"}, "file_ending")):
        with pytest.raises(ExportError, match=word):
            export_nnunet_dataset(tmp_path, checkpoint=joint_run, n=1, **kwargs)
    assert [p.name for p in tmp_path.iterdir()] == []  # failed exports leave nothing behind


# --------------------------------------------------------------------------- checker
def test_check_finds_injected_problems(joint_dataset, tmp_path):
    src = joint_dataset[1]["dataset_dir"]
    dataset = tmp_path / src.name
    shutil.copytree(src, dataset)
    (dataset / "labelsTr" / "syn_001.nii.gz").unlink()
    label = load_volume(dataset / "labelsTr" / "syn_002.nii.gz", is_label=True)
    save_volume(label.with_array(label.array, origin=label.origin + 2.0),
                dataset / "labelsTr" / "syn_002.nii.gz")
    save_volume(label.with_array(label.array * 0 + 12), dataset / "labelsTr" / "real_000.nii.gz")
    shutil.copy(dataset / "imagesTr" / "real_001_0000.nii.gz", dataset / "imagesTr" / "x.nii.gz")
    (dataset / "imagesTr" / "real_001_0000.nii.gz").rename(
        dataset / "imagesTr" / "real_001_0000.nrrd")
    problems = "\n".join(check_nnunet_dataset(dataset))
    for expected in ("imagesTr/syn_001_0000.nii.gz: no label file labelsTr/syn_001.nii.gz",
                     "numTraining is 5 but labelsTr holds 4",
                     "case syn_002: image syn_002_0000.nii.gz and label differ: origin",
                     "case real_000: label values [12] not in dataset.json labels",
                     "imagesTr/x.nii.gz: name must end with a channel suffix _0000",
                     "imagesTr/real_001_0000.nrrd: does not end with file_ending .nii.gz",
                     "case real_001: missing image imagesTr/real_001_0000.nii.gz"):
        assert expected in problems
    meta = json.loads((dataset / "dataset.json").read_text())
    del meta["labels"]["background"]
    (dataset / "dataset.json").write_text(json.dumps(meta))
    assert any("background" in p for p in check_nnunet_dataset(dataset))
    (dataset / "dataset.json").unlink()
    assert check_nnunet_dataset(dataset)[-1].endswith("dataset.json: missing")
    assert "no such dataset folder" in check_nnunet_dataset(tmp_path / "nope")[0]


def test_cli_export_dataset(joint_run, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="napari-medgan")
    add_export_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export-dataset", str(joint_run), "--n", "2", "--seed", "1",
                              "--out", str(tmp_path), "--dataset-id", "42", "--name", "Cli",
                              "--device", "cpu"])
    assert args.func is cmd_export_dataset
    assert cmd_export_dataset(args) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'Dataset042_Cli'} (2 synthetic, 0 real cases)" in out
    assert "check: OK" in out and "nnUNetv2_plan_and_preprocess -d 42" in out
    args.real_labels = tmp_path
    with pytest.raises(ExportError, match="go together"):
        cmd_export_dataset(args)


def test_segment_names_of_the_training_label_maps_reach_dataset_json(tmp_path):
    """Label maps from 3D Slicer (.seg.nrrd) name their segments: the model keeps the names in
    its checkpoint, and the nnU-Net dataset it exports uses them."""
    from napari_medgan.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from napari_medgan.training.trainer import Trainer

    names = {value: f"structure {value}" for value in range(1, max(PHANTOM_LABELS) + 1)}
    for i in range(3):
        image, labels = make_head_phantom((16, 16, 16), seed=i)
        save_volume(image, tmp_path / "img" / f"case{i}.nii.gz")
        labels.meta["segments"] = [{"value": v, "name": n, "color": [0.5, 0.5, 0.5]}
                                   for v, n in names.items()]
        save_volume(labels, tmp_path / "lab" / f"case{i}.seg.nrrd")
    run = RunConfig(
        data=DataConfig(source=str(tmp_path / "img"), labels=str(tmp_path / "lab")),
        model=ModelConfig(name="dcgan3d", task="joint", patch_size=16, channels=8, latent_dim=16),
        train=TrainConfig(memory_check="off", steps=1, batch_size=2, device="cpu"),
        out=str(tmp_path / "run"))
    list(Trainer(run).run())
    export_nnunet_dataset(tmp_path / "raw", checkpoint=tmp_path / "run", n=2, device="cpu")
    meta = json.loads(next((tmp_path / "raw").glob("*/dataset.json")).read_text())
    assert meta["labels"] == {"background": 0, **{n: v for v, n in names.items()}}
    # ... and so does a bundle of it, and the label maps it draws (napari, .seg.nrrd)
    from napari_medgan.export_model import export_model
    from napari_medgan.training.inference import generate, load_generator

    export_model(tmp_path / "run", tmp_path / "head.zip")
    loaded = load_generator(tmp_path / "head.zip", device="cpu")
    assert {s["value"]: s["name"] for s in loaded.segments} == names
    _, (labels,) = generate(loaded, 1)
    written = load_volume(save_volume(labels, tmp_path / "drawn.seg.nrrd"))
    assert [s["name"] for s in written.meta["segments"]] == list(names.values())
