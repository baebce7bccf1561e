"""Provenance records: stamped where layers are made, read back (old markers included)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from napari_medgan.provenance import (
    PROVENANCE_KEY,
    describe_provenance,
    layer_class,
    make_provenance,
    read_provenance,
    stamp,
)


def _layer(metadata=None, path=None):
    return SimpleNamespace(metadata=metadata or {}, source=SimpleNamespace(path=path))


def test_records_are_checked_and_read_back():
    record = make_provenance("synthetic", model="runs/a", step=12, seed=0, source=None)
    assert record == {"kind": "synthetic", "model": "runs/a", "step": 12, "seed": 0}
    assert read_provenance(stamp({}, "real", source="/x.nii")) == {"kind": "real",
                                                                     "source": "/x.nii"}
    assert describe_provenance(record) == "synthetic: step 12, seed 0 (runs/a)"
    with pytest.raises(ValueError, match="kind"):
        make_provenance("fake")
    with pytest.raises(ValueError, match="unknown field"):
        make_provenance("real", colour="red")


@pytest.mark.parametrize("metadata, path, expected", [
    ({PROVENANCE_KEY: {"kind": "derived", "method": "trilinear"}}, None, "derived"),
    ({"medgan_meta": {PROVENANCE_KEY: "baseline"}}, None, "derived"),  # evaluation.py before
    ({"medgan_synthetic": {"checkpoint": "c", "step": 3, "seed": 1}}, None, "synthetic"),
    ({"medgan_synthetic": {"baseline": "nlm", "step": 3}}, None, "derived"),
    ({"medgan_synthetic": True}, None, "synthetic"),
    ({}, "/data/scan.nii.gz", "real"),  # read from a file by some reader
    ({}, None, "unknown"),  # made in the console, drawn, pasted: nobody knows
    ({PROVENANCE_KEY: {"kind": "synthetic"}}, "/data/s.nii.gz", "synthetic"),
])
def test_layer_class_from_metadata_never_names(metadata, path, expected):
    layer = _layer(metadata, path)
    layer.name = "synthetic_000" if expected == "real" else "real head"
    assert layer_class(layer) == expected


def test_reader_stamps_real_unless_a_manifest_says_synthetic(tmp_path):
    from napari_medgan._reader import read_volumes
    from napari_medgan.data.phantom import make_head_phantom
    from napari_medgan.io import save_volume

    image = make_head_phantom((8, 8, 8), seed=0)[0]
    real = save_volume(image, tmp_path / "scan.nii.gz")
    drawn = save_volume(image, tmp_path / "synthetic_000.nii.gz")
    (tmp_path / "synthetic.json").write_text(json.dumps([
        {"file": drawn.name, "layer": "synthetic_000 (step 3)",
         "provenance": {"checkpoint": "runs/a", "step": 3, "seed": 0}}]))
    (_, kw_real, _), (_, kw_drawn, _) = read_volumes([str(real), str(drawn)])
    assert kw_real["metadata"][PROVENANCE_KEY] == {"kind": "real", "source": str(real)}
    assert kw_drawn["metadata"][PROVENANCE_KEY]["kind"] == "synthetic"
    assert kw_drawn["metadata"][PROVENANCE_KEY]["step"] == 3


def test_sample_data_says_what_it_is():
    from napari_medgan._sample_data import make_phantom_sample, make_pretrained_sample

    phantom, labels = make_phantom_sample()
    assert phantom[1]["metadata"][PROVENANCE_KEY]["kind"] == "real"
    assert "phantom" in phantom[1]["metadata"][PROVENANCE_KEY]["source"]
    drawn = make_pretrained_sample()
    assert {d[1]["metadata"][PROVENANCE_KEY]["kind"] for d in drawn} == {"synthetic"}
    assert drawn[0][1]["metadata"][PROVENANCE_KEY]["seed"] == 0



def test_baselines_carry_a_derived_record():
    import numpy as np

    from napari_medgan.evaluation import compute_baselines
    from napari_medgan.io import Volume

    loaded = SimpleNamespace(model=SimpleNamespace(task="denoise"), generator=None,
                             output_normalizer=None)
    noisy = Volume(np.random.default_rng(0).normal(0, 1, (8, 8, 8)).astype(np.float32))
    out = compute_baselines(loaded, noisy, noise_sigma=0.5)
    assert set(out) == {"Gaussian smoothing", "non-local means"}
    for method, volume in out.items():
        assert read_provenance({"medgan_meta": volume.meta}) == {"kind": "derived",
                                                                 "method": method}
