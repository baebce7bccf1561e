"""evaluate_sets / evaluate_folders: every field, paired metrics, masks, files written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medgan.metrics.features import RandomConv3DFeatures
from napari_medgan.metrics.report import evaluate_folders, evaluate_sets

SET_METRICS = ("intensity_wasserstein", "frechet_distance", "mmd2", "diversity_ratio")


def _check_entries(report):
    for name in SET_METRICS:
        entry = report["metrics"][name]
        assert {"value", "definition", "better", "range"} <= set(entry), name
        assert entry["value"] is not None, entry.get("skipped")


def test_identical_sets(real_set):
    report = evaluate_sets(real_set[:4], real_set[:4])
    _check_entries(report)
    m = report["metrics"]
    assert m["intensity_wasserstein"]["value"] == 0.0
    assert abs(m["frechet_distance"]["value"]) < 1e-6
    assert m["diversity_ratio"]["value"] == 1.0
    assert report["memorization"]["n_flagged"] == 4  # every fake *is* a training volume
    assert report["feature_extractor"]["name"] == "random-conv3d"
    assert report["feature_extractor"]["intensity_range_source"].startswith("0.5-99.5")
    assert report["data_range"]["source"] == "pooled max - min of the real set"
    assert report["paired"] is None


def test_mode_collapse_and_memorization_are_visible(real_set):
    # Distinct heads are covered in test_distribution.py and test_memorization.py.
    copy = real_set[1] + np.float32(0.005)
    bad = evaluate_sets(real_set[:4], [copy] * 4)
    assert bad["metrics"]["diversity_ratio"]["value"] > 1.05
    assert bad["metrics"]["diversity_ratio"]["measure"] == "ms-ssim"
    assert bad["memorization"]["n_flagged"] == 4
    assert all(r["real_index"] == 1 for r in bad["memorization"]["nearest"])
    assert bad["memorization"]["real_to_real_nearest"]["max"] < 0.95


def test_paired_metrics_and_masks(real_set, other_set):
    fake = [a + np.float32(0.02) for a in real_set[:3]]
    masks = [a > 0.5 for a in real_set[:3]]
    report = evaluate_sets(
        real_set[:3],
        fake,
        reference_pairs=True,
        masks=masks,
        feature_extractor=RandomConv3DFeatures(seed=5, channels=(4, 8)),
    )
    paired = report["paired"]
    assert len(paired["per_pair"]) == 3 and paired["masked"]
    assert paired["mean"]["mae"] == pytest.approx(0.02, abs=1e-5)
    assert paired["per_pair"][0]["data_range"] == report["data_range"]["value"]
    assert set(paired["definitions"]) == {"mae", "psnr", "ssim", "ms_ssim"}
    assert report["feature_extractor"]["seed"] == 5
    with pytest.raises(ValueError, match="fake\\[1\\].*real\\[1\\]"):
        evaluate_sets(real_set[:2], [fake[0], fake[1][:-1]], reference_pairs=True)
    with pytest.raises(ValueError, match="equal counts"):
        evaluate_sets(real_set[:2], fake, reference_pairs=True)
    with pytest.raises(ValueError, match="masks"):
        evaluate_sets(real_set[:2], fake[:2], masks=masks[:2])


def test_different_shapes_are_centre_cropped(real_set, other_set):
    fake = [a[2:30, 1:31, :] for a in other_set[:3]]
    report = evaluate_sets(real_set[:3], fake)
    assert report["shapes"]["common"] == [28, 30, 32]
    assert any("centre crops" in w for w in report["warnings"])
    _check_entries(report)


def _write_nifti(path, array, spacing=(1.0, 1.0, 1.0)):
    import nibabel as nib

    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS identity in RAS terms
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), affine), str(path))


def test_evaluate_folders_end_to_end(real_set, tmp_path):
    pytest.importorskip("napari_medgan.io.readers")
    real_dir, fake_dir, mask_dir = tmp_path / "real", tmp_path / "fake", tmp_path / "mask"
    for d in (real_dir, fake_dir, mask_dir):
        d.mkdir()
    rng = np.random.default_rng(0)
    for i, a in enumerate(real_set[:3]):
        _write_nifti(real_dir / f"case{i}.nii.gz", a)
        _write_nifti(
            fake_dir / f"case{i}_syn.nii.gz", a + rng.normal(0, 0.05, a.shape).astype(np.float32)
        )
        _write_nifti(mask_dir / f"case{i}_mask.nii.gz", (a > 0.5).astype(np.uint8))
    out = tmp_path / "out" / "report.json"
    report = evaluate_folders(real_dir, fake_dir, reference_pairs=True, mask_dir=mask_dir, out=out)
    on_disk = json.loads(out.read_text())
    assert on_disk["outputs"] == {"json": str(out), "png": str(out.with_suffix(".png"))}
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in SET_METRICS:
        assert on_disk["metrics"][name]["value"] is not None
    assert on_disk["real"][0].endswith("case0.nii.gz") and on_disk["fake"][0].endswith(
        "case0_syn.nii.gz"
    )
    assert on_disk["paired"]["masked"] and len(on_disk["paired"]["per_pair"]) == 3
    assert on_disk["paired"]["per_pair"][0]["mae"] == pytest.approx(
        report["paired"]["per_pair"][0]["mae"]
    )
    assert on_disk["memorization"]["n_flagged"] == 3  # noisy copies of the real cases
    assert not list(out.parent.glob(".*part*"))  # no temporary left behind

    _write_nifti(fake_dir / "case9_syn.nii.gz", real_set[0][:20])
    with pytest.raises(ValueError, match="3 volumes but .* has 4"):
        evaluate_folders(real_dir, fake_dir, reference_pairs=True, out=out, png=False)
    with pytest.raises(ValueError, match="no volume files"):
        evaluate_folders(real_dir, tmp_path / "out", out=out, png=False)
