"""Train on synthetic, test on real: the segmenter behind benchmarks/augmentation.py learns
from matched pairs and tells them apart from mismatched ones, on phantoms it never saw."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medgan.data.phantom import fit_spacing, make_phantom_set
from napari_medgan.metrics.segmentation import dice_per_class, scale_image, train_segmenter

SHAPE = (24, 24, 24)
STEPS = 120  # about 2 s on 2 cores: matched pairs reach a mean Dice near 0.6, mismatched 0.3
MATCHED_AT_LEAST = 0.45


def _pairs(count, seed):
    pairs = make_phantom_set(count, SHAPE, fit_spacing(SHAPE), seed)
    return [v.array for v, _ in pairs], [np.asarray(lab.array) for _, lab in pairs]


def test_matched_pairs_teach_and_mismatched_pairs_do_not():
    images, labels = _pairs(4, 100)
    test = _pairs(2, 200)
    k = int(max(a.max() for a in labels)) + 1
    net = train_segmenter(images, labels, k, steps=STEPS, patch=16, seed=0)
    matched = dice_per_class(net, *test, k, patch=16)
    assert matched.shape == (k - 1,)
    # each image paired with another head's labels: the same images, the same label
    # statistics, but the anatomy no longer matches -- what inconsistent synthetic pairs are
    shuffled = labels[1:] + labels[:1]
    net = train_segmenter(images, shuffled, k, steps=STEPS, patch=16, seed=0)
    mismatched = dice_per_class(net, *test, k, patch=16)
    assert np.nanmean(matched) > MATCHED_AT_LEAST
    assert np.nanmean(matched) > np.nanmean(mismatched) + 0.15


def test_images_are_scaled_per_volume_and_bad_pairs_are_named():
    a = np.random.default_rng(0).normal(100.0, 20.0, SHAPE)
    s = scale_image(a)
    assert abs(np.percentile(s, 1)) < 1e-5 and abs(np.percentile(s, 99) - 1) < 1e-5
    with pytest.raises(ValueError, match=r"images\[0\]"):
        train_segmenter([a], [np.zeros((8, 8, 8))], 2, steps=1, patch=16)
    with pytest.raises(ValueError, match="as many label maps"):
        train_segmenter([a], [], 2, steps=1, patch=16)
    with pytest.raises(ValueError, match="patch"):
        train_segmenter([a], [np.zeros(SHAPE, int)], 2, steps=1, patch=32)


def test_weights_decide_which_pairs_the_crops_come_from():
    """benchmarks/augmentation.py's 1:1 mix: a pair of weight 0 is never drawn, so matched
    pairs weighted 1 beside mismatched ones weighted 0 teach as the matched ones alone do."""
    images, labels = _pairs(4, 100)
    test = _pairs(2, 200)
    k = int(max(a.max() for a in labels)) + 1
    shuffled = labels[1:] + labels[:1]
    both = (images + images, labels + shuffled)
    net = train_segmenter(*both, k, steps=STEPS, patch=16, seed=0, weights=[1] * 4 + [0] * 4)
    only_matched = np.nanmean(dice_per_class(net, *test, k, patch=16))
    net = train_segmenter(*both, k, steps=STEPS, patch=16, seed=0, weights=[0] * 4 + [1] * 4)
    only_mismatched = np.nanmean(dice_per_class(net, *test, k, patch=16))
    assert only_matched > MATCHED_AT_LEAST and only_matched > only_mismatched + 0.15
    with pytest.raises(ValueError, match="weights: .* one per pair \\(8\\)"):
        train_segmenter(*both, k, steps=1, patch=16, weights=[1, 1])
    with pytest.raises(ValueError, match="weights"):
        train_segmenter(*both, k, steps=1, patch=16, weights=[0] * 8)


def test_training_goes_on_from_a_given_network():
    """benchmarks/augmentation.py's schedule (c3): a network pre-trained on one set of pairs
    is fine-tuned on another, from where it stood, not from a fresh start."""
    images, labels = _pairs(4, 100)
    test = _pairs(2, 200)
    k = int(max(a.max() for a in labels)) + 1
    shuffled = labels[1:] + labels[:1]
    net = train_segmenter(images, shuffled, k, steps=STEPS, patch=16, seed=0)
    pretrained = np.nanmean(dice_per_class(net, *test, k, patch=16))
    same = train_segmenter(images, labels, k, steps=0, patch=16, seed=0, net=net)
    assert same is net and np.nanmean(dice_per_class(same, *test, k, patch=16)) == pretrained
    tuned = train_segmenter(images, labels, k, steps=STEPS, patch=16, seed=0, net=net)
    assert np.nanmean(dice_per_class(tuned, *test, k, patch=16)) > max(MATCHED_AT_LEAST,
                                                                       pretrained + 0.15)
