"""Learning tests that can fail for the right reason: a conditional model is trained briefly on
one half of a real T1 head (nibabel's ``anatomical.nii``) and judged on the other half, which
it never saw, against the classical method it replaces. Every generator starts *at* (or, for
denoising, far below) its baseline, so beating the baseline here needs learning; "the loss
fell" is not asked. label2image starts above its lookup, from a regression on the label
map's neighbourhood fitted on the training half (learnt from data too, in closed form): its
test asks that the model as trained, both parts, beats the lookup on unseen anatomy. The
full-budget figures, with the starting estimate beside the model, are in
``benchmarks/quality.py``."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medgan._sample_data import t1_path
from napari_medgan.config import RunConfig
from napari_medgan.evaluation import (
    compute_baselines,
    judge,
    make_case,
    normalised_sigma,
    split_halves,
    tissue_labels,
)
from napari_medgan.io import fit_normalizer, load_volume
from napari_medgan.training.inference import load_generator, synthesize_from
from napari_medgan.training.trainer import Trainer


@pytest.fixture(scope="module")
def halves():
    image = load_volume(t1_path(), is_label=False)
    return split_halves(image), split_halves(tissue_labels(image))


def _train_and_judge(tmp_path, halves, task, steps, noise_sigma=None, **model):
    (train_img, test_img), (train_lab, test_lab) = halves
    if noise_sigma is not None:
        model["noise_std"] = normalised_sigma(fit_normalizer("mr", [train_img.array]),
                                              noise_sigma)
    run = RunConfig.from_dict({
        # the whole training half is trained on: these tests ask whether what is learned
        # transfers to unseen anatomy; early stopping on a held-out slab is tested in
        # test_trainer.py and measured in benchmarks/quality.py
        "data": {"val_fraction": 0},
        "model": {"name": "pix2pix3d", "task": task, "patch_size": 16, "channels": 8, **model},
        "train": {"steps": steps, "batch_size": 4, "lr_g": 1e-3, "lr_d": 1e-3, "seed": 0,
                  "preview_every": 10_000, "checkpoint_every": 10_000},
        "out": str(tmp_path / task),
    })
    for _ in Trainer(run, images=[train_img], labels=[train_lab]).run():
        pass
    loaded = load_generator(tmp_path / task, device="cpu")
    case = make_case(task, test_img, test_lab, factors=model.get("superres_factors", (2, 2, 2)),
                     noise_sigma=noise_sigma, rng=np.random.default_rng(0))
    results = {"model": synthesize_from(loaded, case.condition, case.mask)}
    results.update(compute_baselines(loaded, case))
    return judge(case.truth, results, region=case.region)


def _assert_beats(figures, baselines, metrics=("SSIM", "PSNR", "MAE")):
    model = figures["model"]
    for name in baselines:
        for metric in metrics:
            better = (model[metric] < figures[name][metric] if metric == "MAE"
                      else model[metric] > figures[name][metric])
            assert better, f"{metric}: model {model[metric]:.4g} vs {name} " \
                           f"{figures[name][metric]:.4g} ({figures})"


def test_label2image_beats_the_class_mean_lookup(tmp_path, halves):
    figures = _train_and_judge(tmp_path, halves, "label2image", steps=150)
    _assert_beats(figures, ["class-mean lookup"])


def test_superres_beats_trilinear_and_bspline(tmp_path, halves):
    figures = _train_and_judge(tmp_path, halves, "superres", steps=250)
    _assert_beats(figures, ["trilinear", "cubic B-spline"])


def test_denoise_beats_smoothing_and_nlm(tmp_path, halves):
    sigma = 0.04 * float(np.percentile(halves[0][0].array, 99.5))
    figures = _train_and_judge(tmp_path, halves, "denoise", steps=200, noise_sigma=sigma)
    _assert_beats(figures, ["Gaussian smoothing", "non-local means"], metrics=("PSNR", "MAE"))
