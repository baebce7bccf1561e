"""The README's main job, shortened to a few steps: every output it promises is written."""

import json
import os

import numpy as np
import pytest

from napari_medgan.cli import main


def test_demo_writes_volumes_picture_and_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "3", "--segmenter-steps", "2"]) == 0
    figures = json.loads((out / "figures.json").read_text())
    assert figures["steps"] == 3
    check = figures["segmenter"]  # a segmenter on the pairs against one on real phantoms
    assert (check["pairs"], check["test_phantoms"], check["segmenter_steps"]) == (16, 16, 2)
    assert 0 <= check["dice_trained_on_synthetic"] <= 1 and check["dice_trained_on_real"] > 0
    assert check["ratio"] == pytest.approx(
        check["dice_trained_on_synthetic"] / check["dice_trained_on_real"], abs=0.01)
    per_class = check["per_class"]  # the mean above, tissue by tissue
    assert "ventricles" in per_class and "background" not in per_class
    assert np.mean([v["trained_on_real"] for v in per_class.values()]) == pytest.approx(
        check["dice_trained_on_real"], abs=0.002)
    assert set(figures["quality"]) >= {"intensity_wasserstein", "diversity_ratio", "memorized"}
    printed = capsys.readouterr().out
    assert '"diversity_ratio"' in printed and "of one trained on 16 real phantoms" in printed
    volumes = sorted(p.name for p in (out / "volumes").glob("*.nii.gz"))
    assert "synthetic_000.nii.gz" in volumes and "synthetic_000_labels.nii.gz" in volumes
    assert len([v for v in volumes if v.startswith("real_")]) == 16
    assert (out / "side_by_side.png").stat().st_size > 20_000
    phases = figures["phase_seconds"]  # where the minutes went
    assert list(phases)[0] == "setup and training" and list(phases)[-1] == "segmenter check"
    assert sum(phases.values()) <= figures["total_seconds"] + 0.5


def test_a_second_demo_replaces_its_own_run_but_never_another(tmp_path):
    from napari_medgan.config import RunConfig
    from napari_medgan.demo import _replace_previous_demo, demo_config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    demo_config(tmp_path).to_yaml(run_dir / "config.yaml")
    (run_dir / "checkpoints").mkdir()
    _replace_previous_demo(run_dir)
    assert not run_dir.exists()
    other = RunConfig.from_dict({"data": {"source": str(tmp_path)}, "out": str(run_dir)})
    run_dir.mkdir()
    other.to_yaml(run_dir / "config.yaml")
    with pytest.raises(ValueError, match="not a previous demo"):
        _replace_previous_demo(run_dir)
    assert (run_dir / "config.yaml").exists()


def test_a_demo_still_training_is_never_deleted(tmp_path):
    from napari_medgan.demo import _replace_previous_demo, demo_config
    from napari_medgan.training.lock import RunFolderLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    demo_config(tmp_path).to_yaml(run_dir / "config.yaml")
    with RunFolderLock(run_dir):  # as the trainer of the running demo holds it
        with pytest.raises(ValueError, match=r"run: run folder is in use by another training "
                                             rf"process \(pid {os.getpid()}"):
            _replace_previous_demo(run_dir)
    assert (run_dir / "config.yaml").exists()
