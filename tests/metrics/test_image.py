"""Paired metrics: agreement with scikit-image, units, masks, MS-SSIM size limits, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_medgan.metrics.image import (
    MS_SSIM_MIN_SIDE,
    compute_mae,
    compute_ms_ssim,
    compute_psnr,
    compute_ssim,
    paired_metrics,
    ssim_map,
)

# skimage's gaussian SSIM: sigma 1.5, truncate 3.5 -> an 11-voxel window, the same as MONAI's;
# it filters the full volume and then drops 5 voxels at every border, i.e. it averages exactly
# MONAI's "valid" map. Remaining difference: MONAI runs in float32 (~1e-6 here), so 1e-4.
SKIMAGE_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
SSIM_TOL = 1e-4
# PSNR is one log of the MSE; MONAI keeps our float64 tensors, so only rounding differs.
PSNR_TOL = 1e-6


@pytest.fixture(scope="module")
def ct_pair(make_phantom):
    ref = make_phantom((24, 28, 32), seed=3, modality="ct").astype(np.float64)
    noise = np.random.default_rng(0).normal(0, 30, ref.shape)
    return ref + noise, ref


def test_psnr_matches_skimage(ct_pair):
    pred, ref = ct_pair
    for data_range in (2000.0, float(np.ptp(ref))):
        expected = peak_signal_noise_ratio(ref, pred, data_range=data_range)
        assert compute_psnr(pred, ref, data_range) == pytest.approx(expected, abs=PSNR_TOL)


def test_ssim_matches_skimage(ct_pair):
    pred, ref = ct_pair
    data_range = float(np.ptp(ref))
    expected = structural_similarity(pred, ref, data_range=data_range, **SKIMAGE_SSIM)
    assert compute_ssim(pred, ref, data_range) == pytest.approx(expected, abs=SSIM_TOL)
    assert compute_ssim(ref, ref, data_range) == pytest.approx(1.0, abs=1e-5)


def test_masked_ssim_matches_skimage_map(ct_pair):
    pred, ref = ct_pair
    data_range = float(np.ptp(ref))
    mask = ref > 0
    _, full = structural_similarity(pred, ref, data_range=data_range, full=True, **SKIMAGE_SSIM)
    r = 5  # skimage's border crop for an 11-voxel window
    inner = (slice(r, -r),) * 3
    expected = full[inner][mask[inner]].mean()
    assert compute_ssim(pred, ref, data_range, mask=mask) == pytest.approx(expected, abs=SSIM_TOL)
    assert ssim_map(pred, ref, data_range).shape == tuple(s - 10 for s in ref.shape)


def test_mae_is_in_original_units(ct_pair):
    pred, ref = ct_pair
    assert compute_mae(pred, ref) == pytest.approx(np.abs(pred - ref).mean(), rel=1e-12)
    mask = ref > 0
    assert compute_mae(pred, ref, mask) == pytest.approx(np.abs(pred - ref)[mask].mean(), rel=1e-12)
    assert compute_mae(pred, ref) > 10  # ~24 HU for sigma-30 noise: not in normalised units


def test_masked_metrics_move_in_the_expected_direction(make_phantom):
    ref = make_phantom((24, 24, 24), seed=1)
    mask = np.zeros(ref.shape, bool)
    mask[6:18, 6:18, 6:18] = True
    pred = ref.copy()
    pred[mask] += np.random.default_rng(1).normal(0, 0.2, mask.sum()).astype(np.float32)
    un, ma = paired_metrics(pred, ref, 1.0), paired_metrics(pred, ref, 1.0, mask=mask)
    # All the error is inside the mask: averaging over the mask only makes everything worse.
    assert ma["mae"] > un["mae"]
    assert ma["psnr"] < un["psnr"]
    assert ma["ssim"] < un["ssim"]
    # Error only outside the mask: the masked figures are perfect.
    pred2 = ref + np.where(mask, 0, 0.2).astype(np.float32)
    assert compute_mae(pred2, ref, mask) == 0
    assert compute_psnr(pred2, ref, 1.0, mask) == np.inf
    assert ma["masked"] and ma["mask_voxels"] == int(mask.sum())


def test_ms_ssim_identity_and_size_limit(make_phantom):
    ref = make_phantom((32, 32, 32), seed=2)
    noisy = ref + np.random.default_rng(2).normal(0, 0.1, ref.shape).astype(np.float32)
    assert compute_ms_ssim(ref, ref, 1.0) == pytest.approx(1.0, abs=1e-5)
    assert 0 < compute_ms_ssim(noisy, ref, 1.0) < 1
    small = ref[: MS_SSIM_MIN_SIDE - 1]
    with pytest.raises(ValueError, match="MS-SSIM"):
        compute_ms_ssim(small, small, 1.0)


def test_batch_ssim_and_ms_ssim_are_monais_values(make_phantom):
    """The set metrics' separable window gives MONAI's SSIMMetric / MultiScaleSSIMMetric
    values, on heads of several shapes and their noisy, shifted and unrelated partners."""
    import torch
    from monai.metrics import MultiScaleSSIMMetric, SSIMMetric

    from napari_medgan.metrics.image import (
        MS_SSIM_KERNEL_SIZE,
        MS_SSIM_SIGMA,
        MS_SSIM_WEIGHTS,
        compute_ms_ssim_batch,
        compute_ssim_batch,
    )

    rng = np.random.default_rng(5)
    for shape in ((32, 32, 32), (30, 40, 36)):
        ref = np.stack([make_phantom(shape, seed=s) for s in (1, 2, 3)]).astype(np.float32)
        pred = np.stack([ref[0] + rng.normal(0, 0.1, shape), np.roll(ref[1], 3, axis=2),
                         make_phantom(shape, seed=9)]).astype(np.float32)
        tp, tr = (torch.from_numpy(a)[:, None] for a in (pred, ref))
        monai_ssim = SSIMMetric(spatial_dims=3, data_range=1.2, win_size=11, kernel_sigma=1.5,
                                reduction="none")(tp, tr).reshape(-1).numpy()
        monai_ms = MultiScaleSSIMMetric(
            spatial_dims=3, data_range=1.2, kernel_size=MS_SSIM_KERNEL_SIZE,
            kernel_sigma=MS_SSIM_SIGMA, weights=MS_SSIM_WEIGHTS, reduction="none",
        )(tp, tr).reshape(-1).numpy()
        ours_ssim = compute_ssim_batch(pred, ref, 1.2)
        ours_ms = compute_ms_ssim_batch(pred, ref, 1.2)
        assert len(set(np.round(ours_ms, 2))) == 3  # three different similarities
        np.testing.assert_allclose(ours_ssim, monai_ssim, atol=2e-5)
        np.testing.assert_allclose(ours_ms, monai_ms, atol=2e-5)


def test_paired_metrics_states_data_range(make_phantom):
    ref = make_phantom((16, 16, 16), seed=4, modality="ct")
    res = paired_metrics(ref + 1, ref)
    assert res["data_range"] == pytest.approx(float(np.ptp(ref)))
    assert res["data_range_source"] == "reference max - min"
    assert res["ms_ssim"] is None  # 16^3 is below the MS-SSIM minimum side
    assert res["mae"] == pytest.approx(1.0, abs=1e-4)
    assert paired_metrics(ref + 1, ref, data_range=2000)["data_range_source"] == "given"


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda a: compute_mae(a, a[:-1]), "same shape"),
        (lambda a: compute_psnr(a, a, 0.0), "data_range"),
        (lambda a: compute_psnr(a[0], a[0], 1.0), "3D"),
        (lambda a: compute_ssim(a, a, 1.0, mask=np.zeros(a.shape, bool)), "mask is empty"),
        (lambda a: compute_ssim(a, a, 1.0, mask=np.ones((2, 2, 2), bool)), "mask must have"),
        (lambda a: compute_ssim(a[:8], a[:8], 1.0), "window"),
        (lambda a: compute_mae(np.full(a.shape, np.nan), a), "finite"),
        (lambda a: paired_metrics(np.zeros_like(a), np.zeros_like(a)), "data_range"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.random.default_rng(0).random((16, 16, 16)))
