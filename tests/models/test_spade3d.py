"""SPADE generator: the label map reaches every layer, and an untrained network is the fitted
classical estimate (lookup + class-fraction context)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_medgan.models.spade3d import (
    CONTEXT_SIGMAS,
    SPADE3d,
    SPADEGenerator3D,
    _context_kernels,
    class_context,
)
from napari_medgan.training.checkpoint import load_checkpoint, save_checkpoint


def _one_hot(labels: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(labels.long(), k).permute(0, 4, 1, 2, 3).float()


@pytest.mark.parametrize("kwargs, in_shape", [
    (dict(in_channels=4, channels=4), (2, 4, 16, 16, 16)),
    (dict(in_channels=8, channels=4), (1, 8, 32, 32, 32)),
    (dict(in_channels=3, channels=4, levels=3), (1, 3, 16, 32, 48)),
])
def test_shapes(kwargs, in_shape):
    g = SPADEGenerator3D(**kwargs)
    assert g(torch.rand(in_shape)).shape == (in_shape[0], 1, *in_shape[2:])


def test_untrained_generator_is_the_class_mean_lookup():
    g = SPADEGenerator3D(in_channels=3, channels=4)
    g.class_means.copy_(torch.tensor([-1.0, 0.2, 0.7]))
    labels = torch.randint(0, 3, (2, 16, 16, 16))
    out = g(_one_hot(labels, 3))
    torch.testing.assert_close(out[:, 0], g.class_means[labels])


def test_output_is_raised_to_the_darkest_training_image():
    """A correction that pushes the air below the darkest training voxel is clipped there
    in training as when evaluated; training passes the gradient straight through."""
    class Data:
        label_arrays = [_blobs(0)]
        volumes = [_partial_volume_image(label_arrays[0])]

    g = SPADEGenerator3D(in_channels=3, channels=4)
    g.fit_to_data(Data())
    floor = float(Data.volumes[0].min())
    assert g.floor.value.item() == pytest.approx(floor)
    torch.nn.init.constant_(g.head.bias, -1.0)  # a correction far below the air
    x = _one_hot(torch.from_numpy(_blobs(1)[None, :16, :16, :16]), 3)
    with torch.no_grad():
        out = g.eval()(x)
    torch.testing.assert_close(out.min(), torch.tensor(floor))
    trained = g.train()(x)  # training sees the same floored output
    torch.testing.assert_close(trained, out)
    (trained - 1.0).abs().mean().backward()  # a target above the floor pulls even floored
    assert g.head.bias.grad.item() < 0  # voxels up (straight-through gradient)


def _blobs(seed: int, shape=(24, 24, 24)) -> np.ndarray:
    """Three classes: background, thick blobs and, inside each blob, a thinner core."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=shape), 2.5)
    labels = (field > np.percentile(field, 55)).astype(np.int64)
    labels[field > np.percentile(field, 85)] = 2
    return labels


def _partial_volume_image(labels: np.ndarray) -> np.ndarray:
    """What a scanner records: the class intensities blurred by its point spread function."""
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(np.array([-0.9, 0.1, 0.8])[labels], 1.0).astype(np.float32)


def test_class_context_is_scipys_gaussian_filter_with_the_border_replicated():
    from scipy import ndimage as ndi

    x = torch.rand(2, 3, 12, 17, 20, dtype=torch.float64)  # not cubic: each axis its own
    got = class_context(x, _context_kernels().double()).numpy()
    want = np.stack([ndi.gaussian_filter(x[b, c].numpy(), s, mode="nearest", truncate=3)
                     for b in range(2) for s in CONTEXT_SIGMAS for c in range(3)])
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-10)


def test_untrained_generator_is_the_fitted_estimate():
    class Data:
        label_arrays = [_blobs(0)]
        volumes = [_partial_volume_image(label_arrays[0])]

    g = SPADEGenerator3D(in_channels=3, channels=4).eval()
    g.fit_to_data(Data())
    assert g.context_weights.abs().sum() > 0
    x = _one_hot(torch.from_numpy(_blobs(1)[None, :16, :16, :16]), 3)
    with torch.no_grad():  # raised to the darkest training voxel, evaluated or training
        floored = g.estimate(x).clamp_min(Data.volumes[0].min())
        torch.testing.assert_close(g(x), floored)
        torch.testing.assert_close(g.train()(x), floored)


def test_context_estimate_beats_the_lookup_on_an_unseen_map():
    """Fitted on one label map, the context term predicts partial volume on another one:
    voxels near a boundary take their neighbours' intensity, which a lookup cannot."""
    class Data:
        label_arrays = [_blobs(0)]
        volumes = [_partial_volume_image(label_arrays[0])]

    g = SPADEGenerator3D(in_channels=3, channels=4)
    g.fit_to_data(Data())
    unseen = _blobs(7)
    truth = torch.from_numpy(_partial_volume_image(unseen))
    x = _one_hot(torch.from_numpy(unseen[None]), 3)
    with torch.no_grad():
        lookup = (g.lookup(x)[0, 0] - truth).abs().mean().item()
        estimate = (g.estimate(x)[0, 0] - truth).abs().mean().item()
    assert estimate < 0.5 * lookup, (estimate, lookup)


def test_checkpoint_from_before_the_context_term_loads_as_the_lookup(tmp_path):
    """A checkpoint without the context buffers (napari-medgan before them) still loads, and
    its generator is the model it was: the lookup plus its correction."""
    class Data:
        label_arrays = [_blobs(0)]
        volumes = [_partial_volume_image(label_arrays[0])]

    old = SPADEGenerator3D(in_channels=3, channels=4).eval()
    old.fit_to_data(Data())
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("context_")}
    with torch.no_grad():
        old.context_weights.zero_()
        old.context_bias.zero_()

    class Before(torch.nn.Module):  # what older versions saved: no context buffers
        def state_dict(self, *args, **kwargs):
            return dict(state)

    ckpt = load_checkpoint(save_checkpoint(tmp_path / "old", modules={"generator": Before()}))
    new = SPADEGenerator3D(in_channels=3, channels=4).eval()
    ckpt.load_module("generator", new)
    x = _one_hot(torch.from_numpy(_blobs(1)[None, :16, :16, :16]), 3)
    with torch.no_grad():
        torch.testing.assert_close(new(x), old(x))
        torch.testing.assert_close(new(x), new.lookup(x))


def test_modulation_tells_uniform_regions_apart():
    """Instance norm maps any uniform feature region to 0; SPADE's label-dependent scale and
    shift must give different outputs for different classes (Park et al. 2019, section 3)."""
    torch.manual_seed(0)
    norm = SPADE3d(channels=4, label_channels=3)
    features = torch.ones(1, 4, 8, 8, 8)
    a = norm(features, _one_hot(torch.zeros(1, 8, 8, 8), 3))
    b = norm(features, _one_hot(torch.full((1, 8, 8, 8), 2), 3))
    assert torch.nn.InstanceNorm3d(4)(features).abs().max() == 0  # plain norm erases it
    assert (a - b).abs().mean() > 1e-3


def test_correction_learns_what_the_lookup_cannot():
    """Fit a target that varies inside a class: L1 falls well below the lookup's."""
    torch.manual_seed(0)
    labels = torch.zeros(1, 16, 16, 16, dtype=torch.long)
    labels[:, 4:12, 4:12, 4:12] = 1
    target = torch.where(labels == 1, 0.5, -0.8)[:, None].float()
    target = target + 0.3 * torch.linspace(-1, 1, 16)[None, None, None, None, :]  # a gradient
    g = SPADEGenerator3D(in_channels=2, channels=8)
    g.class_means.copy_(torch.tensor([-0.8, 0.5]))
    x = _one_hot(labels, 2)
    start = (g(x) - target).abs().mean().item()
    opt = torch.optim.Adam(g.parameters(), lr=3e-3)
    for _ in range(60):
        loss = (g(x) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * start, (start, loss.item())


def test_fit_to_data_sets_class_means():
    class Data:
        volumes = [np.array([[[0.0, 1.0], [1.0, 3.0]]], dtype=np.float32)]
        label_arrays = [np.array([[[0, 1], [1, 1]]], dtype=np.uint8)]

    g = SPADEGenerator3D(in_channels=3, channels=4)
    g.fit_to_data(Data())
    # class 2 is absent: it gets the overall mean
    torch.testing.assert_close(g.class_means, torch.tensor([0.0, 5 / 3, 1.25]))


@pytest.mark.parametrize("kwargs, field", [(dict(in_channels=1), "in_channels"),
                                           (dict(in_channels=3, out_channels=2), "out_channels"),
                                           (dict(in_channels=3, levels=0), "levels")])
def test_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SPADEGenerator3D(**kwargs)


@pytest.mark.parametrize("shape, match", [((1, 3, 18, 16, 16), "divisible by 4"),
                                          ((1, 2, 16, 16, 16), r"\(B, 3, D, H, W\)")])
def test_rejects_bad_input(shape, match):
    with pytest.raises(ValueError, match=match):
        SPADEGenerator3D(in_channels=3, channels=4)(torch.rand(shape))
