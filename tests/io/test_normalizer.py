"""Normalizer presets: forward/inverse, fitting, serialisation, numpy and torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_medgan.io import Normalizer, Volume, fit_normalizer


def test_ct_preset_maps_window_ends_and_clips():
    norm = fit_normalizer("ct", [])
    x = np.array([-3000.0, -1000.0, 0.0, 500.0, 1000.0, 3000.0], np.float32)
    np.testing.assert_allclose(norm.forward(x), [-1, -1, 0, 0.5, 1, 1], atol=1e-7)
    assert norm.forward(x).dtype == np.float32
    inside = np.linspace(-1000, 1000, 101)
    np.testing.assert_allclose(norm.inverse(norm.forward(inside)), inside, atol=1e-9)
    assert fit_normalizer("ct", window=(-200, 300)).forward(np.array([50.0]))[0] == 0.0
    assert Normalizer.ct(-100, 100) == fit_normalizer("ct", low=-100, high=100)


def test_ct_inverse_turns_generator_output_into_hu():
    norm = fit_normalizer("ct", low=-1000, high=1000)
    fake = torch.tensor([-1.0, 0.0, 0.2, 1.0])
    np.testing.assert_allclose(norm.inverse(fake).numpy(), [-1000, 0, 200, 1000], atol=1e-3)


def test_mr_percentiles_on_foreground():
    rng = np.random.default_rng(0)
    brain = rng.uniform(100, 600, size=(10, 10, 10))
    brain[:, :3] = 0.0  # background that must not pull the low percentile down
    norm = fit_normalizer("mr", [brain])
    fg = brain[brain > 0]
    assert norm.low == pytest.approx(np.percentile(fg, 0.5))
    assert norm.high == pytest.approx(np.percentile(fg, 99.5))
    y = norm.forward(brain)
    assert y.min() == -1.0 and y.max() == 1.0
    inside = fg[(fg >= norm.low) & (fg <= norm.high)]
    np.testing.assert_allclose(norm.inverse(norm.forward(inside)), inside, rtol=1e-12)
    all_voxels = fit_normalizer("mr", brain, foreground=False, percentiles=(1, 99))
    assert all_voxels.low == 0.0 and all_voxels.percentiles == (1.0, 99.0)


def test_zscore_and_none_are_exactly_invertible_everywhere():
    x = np.random.default_rng(1).normal(50, 7, size=(4, 5, 6))
    vols = [Volume(x[:2].copy()), Volume(x[2:].copy())]
    z = fit_normalizer("zscore", vols)
    assert z.mean == pytest.approx(x.mean()) and z.std == pytest.approx(x.std())
    y = z.forward(x)
    assert abs(y.mean()) < 1e-9 and abs(y.std() - 1) < 1e-9
    np.testing.assert_allclose(z.inverse(y), x, rtol=1e-12)
    ident = fit_normalizer("none")
    np.testing.assert_array_equal(ident.forward(x), x)
    np.testing.assert_array_equal(ident.inverse(x), x)


@pytest.mark.parametrize("preset", ["ct", "mr", "zscore", "none"])
def test_dict_round_trip_is_json_friendly(preset):
    data = np.random.default_rng(2).uniform(-500, 800, size=(6, 6, 6))
    norm = fit_normalizer(preset, data)
    d = json.loads(json.dumps(norm.to_dict()))
    again = Normalizer.from_dict(d)
    assert again == norm
    np.testing.assert_array_equal(again.forward(data), norm.forward(data))


def test_torch_tensors_and_integer_input():
    norm = fit_normalizer("ct")
    t = torch.tensor([[-1000, 0, 1000]], dtype=torch.int16)
    y = norm.forward(t)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    assert torch.equal(y, torch.tensor([[-1.0, 0.0, 1.0]]))
    a = norm.forward(np.array([-1000, 1000], np.int16))
    assert a.dtype == np.float32
    mr = fit_normalizer("mr", torch.linspace(1, 100, 1000))
    assert 1 < mr.low < mr.high < 100


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fit_normalizer("pet", []), "preset must be one of"),
        (lambda: fit_normalizer("ct", [], percentiles=(1, 2)), "unknown parameters"),
        (lambda: fit_normalizer("mr", [np.full((3, 3, 3), 5.0)]), "constant"),
        (lambda: fit_normalizer("zscore", [np.ones((2, 2, 2))]), "constant"),
        (lambda: fit_normalizer("mr", [np.full((2, 2, 2), np.nan)]), "no finite"),
        (lambda: Normalizer(preset="ct", low=10, high=10), "high must exceed low"),
        (lambda: Normalizer(preset="zscore", std=0), "std must be > 0"),
        (lambda: Normalizer(preset="mr", percentiles=(50, 5)), "percentiles"),
        (lambda: Normalizer(low=float("nan")), "low must be finite"),
        (lambda: Normalizer.from_dict({"preset": "ct", "window": [0, 1]}), "unknown keys"),
    ],
)
def test_bad_parameters_are_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
