"""Set metrics: Wasserstein, MMD, Frechet distance, diversity -- identities and directions."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medgan.metrics.distribution import (
    compute_mmd,
    diversity,
    diversity_ratio,
    frechet_distance,
    histogram_wasserstein,
    median_heuristic_bandwidth,
)


def test_wasserstein_identical_is_zero_and_shift_is_shift(real_set):
    assert histogram_wasserstein(real_set, real_set) == 0.0
    # W1 between a distribution and its translate is the translation (subsamples share indices).
    shifted = [a + 0.25 for a in real_set]
    assert histogram_wasserstein(real_set, shifted, max_samples=10_000) == pytest.approx(
        0.25, abs=1e-6
    )


def test_wasserstein_mask_threshold_drops_background(real_set):
    fake = [np.where(a > 0.05, a, 0.04) for a in real_set]  # background changed only
    assert histogram_wasserstein(real_set, fake) > 0
    assert histogram_wasserstein(real_set, fake, mask_threshold=0.05) == 0.0
    with pytest.raises(ValueError, match="mask_threshold"):
        histogram_wasserstein(real_set, fake, mask_threshold=10.0)


def test_mmd_identical_sets_equals_closed_form():
    x = np.random.default_rng(0).normal(size=(20, 8))
    bw = median_heuristic_bandwidth(x, x)
    k = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / (2 * bw**2))
    off_diag_mean = (k.sum() - 20) / (20 * 19)
    # Same set twice: the cross term includes k(x_i, x_i) = 1, so MMD^2_u = -2 (1 - mean k) / n.
    assert compute_mmd(x, x) == pytest.approx(-2 * (1 - off_diag_mean) / 20, rel=1e-9)
    assert abs(compute_mmd(x, x)) < 0.1


def test_mmd_grows_with_distribution_shift():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    same = compute_mmd(x, y)
    assert abs(same) < 0.05  # same distribution: 0 in expectation
    values = [compute_mmd(x, y + s, bandwidth=3.0) for s in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] > 10 * abs(values[0])
    assert compute_mmd(x, y + 1.0, kernel="polynomial") > compute_mmd(x, y, kernel="polynomial")


def test_frechet_distance_identity_and_mean_shift():
    x = np.random.default_rng(2).normal(size=(200, 6))
    assert abs(frechet_distance(x, x)) < 1e-8
    # Same covariance, mean moved by d: FID = |d|^2 exactly.
    d = np.array([1.0, -2.0, 0, 0, 0, 0.5])
    assert frechet_distance(x, x + d) == pytest.approx(float(d @ d), rel=1e-6)


def test_frechet_distance_with_fewer_samples_than_features():
    x = np.random.default_rng(3).normal(size=(6, 32))  # singular covariances
    # sqrtm of a singular product is accurate to ~sqrt(machine eps) relative to the trace terms.
    scale = 2 * np.trace(np.cov(x, rowvar=False))
    assert abs(frechet_distance(x, x)) < 1e-6 * scale
    assert frechet_distance(x, x + 1.0) > 31


def test_diversity_ratio_identity_and_mode_collapse(real_set):
    real = real_set[:4]
    res = diversity_ratio(real, real)
    assert res["value"] == 1.0
    assert res["measure"] == "ms-ssim"
    collapsed = [real[0]] * len(real)
    res = diversity_ratio(real, collapsed)
    assert res["fake"]["value"] == pytest.approx(1.0, abs=1e-5)
    assert res["value"] > 1.0


def test_diversity_falls_back_to_ssim_for_small_volumes(real_set):
    small = [a[8:24, 8:24, 8:24] for a in real_set]
    res = diversity(small)
    assert res["measure"] == "ssim" and res["settings"]["win_size"] == 11
    assert res["pairs"] == 10 and res["n"] == 5
    assert diversity(small, max_pairs=3)["pairs"] == 3
    with pytest.raises(ValueError, match="ms-ssim"):
        diversity(small, measure="ms-ssim")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: compute_mmd(np.zeros((1, 3)), np.zeros((4, 3))), "at least 2"),
        (lambda: compute_mmd(np.zeros((4, 3)), np.zeros((4, 2))), "feature sizes"),
        (lambda: compute_mmd(np.eye(3), np.eye(3), kernel="laplace"), "kernel"),
        (lambda: compute_mmd(np.eye(3), np.eye(3), bandwidth=-1.0), "bandwidth"),
        (lambda: frechet_distance(np.zeros(5), np.zeros(5)), "2D"),
        (lambda: histogram_wasserstein([], [np.zeros((2, 2, 2))]), "empty"),
        (lambda: diversity([np.zeros((16, 16, 16))]), "at least 2"),
        (lambda: diversity([np.zeros((16, 16, 16)), np.zeros((16, 16, 15))]), "differ in shape"),
        (
            lambda: diversity_ratio([np.zeros((16,) * 3)] * 2, [np.zeros((17,) * 3)] * 2),
            "shapes differ",
        ),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
