"""Feature extractors: determinism, safetensors + JSON round trip (no pickle), training, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_medgan.metrics.features import (
    FeatureEncoder3D,
    RandomConv3DFeatures,
    load_feature_extractor,
    save_feature_extractor,
    train_feature_extractor,
)


def test_random_features_are_deterministic_and_seeded(real_set):
    torch.manual_seed(123)  # the global RNG must not matter
    a = RandomConv3DFeatures(seed=7).extract(real_set, (0, 1))
    torch.manual_seed(456)
    b = RandomConv3DFeatures(seed=7).extract(real_set, (0, 1))
    c = RandomConv3DFeatures(seed=8).extract(real_set, (0, 1))
    assert a.shape == (5, 64) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    desc = RandomConv3DFeatures(seed=7).describe()
    assert desc["name"] == "random-conv3d" and desc["seed"] == 7 and "seed 7" in desc["training"]


def test_extract_needs_an_intensity_range(real_set):
    with pytest.raises(ValueError, match="intensity_range"):
        RandomConv3DFeatures().extract(real_set)
    with pytest.raises(ValueError, match="intensity_range"):
        RandomConv3DFeatures().extract(real_set, (1.0, 1.0))


def test_save_load_round_trip_without_pickle(real_set, tmp_path):
    ex = RandomConv3DFeatures(seed=3, channels=(4, 8), intensity_range=(0.0, 1.0))
    weights, config = save_feature_extractor(ex, tmp_path / "enc.safetensors")
    assert weights.name == "enc.safetensors" and config.name == "enc.json"
    # safetensors = 8-byte little-endian header length + JSON header + raw tensor bytes.
    raw = weights.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert set(header) - {"__metadata__"} == set(ex.encoder.state_dict())
    loaded = load_feature_extractor(config)  # either file names the pair
    np.testing.assert_array_equal(loaded.extract(real_set), ex.extract(real_set))
    desc = loaded.describe()
    assert (
        desc["file"] == str(weights) and desc["seed"] == 3 and desc["intensity_range"] == [0.0, 1.0]
    )
    assert desc["architecture"]["channels"] == [4, 8]


def test_trained_extractor_is_deterministic_and_round_trips(real_set, tmp_path):
    kw = dict(steps=6, seed=1, channels=(4, 8), patch_size=16, batch_size=4)
    a = train_feature_extractor(real_set, **kw)
    b = train_feature_extractor(real_set, **kw)
    fa = a.extract(real_set)
    np.testing.assert_array_equal(fa, b.extract(real_set))
    assert not np.allclose(
        fa, RandomConv3DFeatures(seed=1, channels=(4, 8)).extract(real_set, a.intensity_range)
    )
    info = a.describe()
    assert info["name"] == "ssl-rotation-conv3d"
    assert info["training"]["steps"] == 6 and "rotation" in info["training"]["objective"]
    assert np.isfinite(info["training"]["final_loss"])
    save_feature_extractor(a, tmp_path / "trained")
    loaded = load_feature_extractor(tmp_path / "trained.safetensors")
    np.testing.assert_array_equal(loaded.extract(real_set), fa)
    assert loaded.describe()["training"]["steps"] == 6


def test_load_rejects_bad_files(tmp_path):
    ex = RandomConv3DFeatures(channels=(4, 8))
    weights, config = save_feature_extractor(ex, tmp_path / "enc")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_feature_extractor(tmp_path / "missing.json")
    cfg = json.loads(config.read_text())
    config.write_text(
        json.dumps({**cfg, "architecture": {**cfg["architecture"], "channels": [4, 16]}})
    )
    with pytest.raises(ValueError, match="do not match"):
        load_feature_extractor(weights)
    config.write_text(json.dumps({**cfg, "format": "something-else"}))
    with pytest.raises(ValueError, match="format"):
        load_feature_extractor(weights)
    config.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_feature_extractor(weights)
    config.write_text(json.dumps(cfg))
    weights.write_bytes(b"\x80\x04pickle?")
    with pytest.raises(ValueError, match="do not match"):
        load_feature_extractor(weights)


def test_encoder_checks_its_input():
    with pytest.raises(ValueError, match="5-D"):
        FeatureEncoder3D()(torch.zeros(1, 8, 8, 8))
    with pytest.raises(ValueError, match="kernel_size"):
        FeatureEncoder3D(kernel_size=2)
    with pytest.raises(ValueError, match="channels"):
        FeatureEncoder3D(channels=())
