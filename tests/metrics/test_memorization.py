"""Memorization: a copied training volume is flagged, a different head is not."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medgan.metrics.memorization import (
    flag_memorized,
    ncc_matrix,
    nearest_neighbours,
    real_nn_scores,
)


@pytest.fixture(scope="module")
def fakes(real_set, other_set):
    copy = real_set[2] + np.random.default_rng(0).normal(0, 0.01, real_set[2].shape).astype(
        np.float32
    )
    return [copy, other_set[0], other_set[1]]


@pytest.mark.parametrize("method", ["ncc", "ssim"])
def test_copy_is_flagged_and_other_heads_are_not(real_set, fakes, method):
    flagged = flag_memorized(nearest_neighbours(fakes, real_set, method=method), threshold=0.95)
    assert [r["memorized"] for r in flagged] == [True, False, False]
    assert flagged[0]["real_index"] == 2 and flagged[0]["score"] > 0.98
    assert all(r["method"] == method and r["threshold"] == 0.95 for r in flagged)
    assert all(r["second_score"] <= r["score"] for r in flagged)


def test_ncc_equals_pearson_correlation(real_set, fakes):
    expected = np.array(
        [[np.corrcoef(f.ravel(), r.ravel())[0, 1] for r in real_set] for f in fakes]
    )
    np.testing.assert_allclose(ncc_matrix(fakes, real_set, batch_size=2), expected, atol=1e-10)


def test_ncc_is_invariant_to_linear_intensity_change_and_safe_for_constants(real_set):
    scaled = [3 * real_set[0] - 100]
    assert ncc_matrix(scaled, real_set)[0, 0] == pytest.approx(1.0)
    assert np.all(ncc_matrix([np.zeros_like(real_set[0])], real_set) == 0)


def test_real_to_real_scores_calibrate_the_threshold(real_set):
    scores = real_nn_scores(real_set)
    assert scores.shape == (5,) and np.all(scores < 0.95) and np.all(scores > 0.5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda r: nearest_neighbours(r, r, method="l2"), "method"),
        (lambda r: nearest_neighbours([r[0][:16]], r), "shapes differ"),
        (lambda r: nearest_neighbours([], r), "empty"),
        (lambda r: flag_memorized([], threshold=2.0), "threshold"),
        (lambda r: real_nn_scores(r[:1]), "at least 2"),
    ],
)
def test_bad_input_raises_value_error(real_set, call, match):
    with pytest.raises(ValueError, match=match):
        call(real_set)
