"""GAN losses against hand-computed values, non-saturation, R1, precision, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from napari_medgan.training.losses import (
    LOSS_KINDS,
    discriminator_loss,
    generator_loss,
    r1_penalty,
)

LOG2 = math.log(2.0)

# (kind, real logits, fake logits, expected D loss, expected G loss)
CASES = [
    ("bce", [0.0, 0.0], [0.0, 0.0], 2 * LOG2, LOG2),
    ("bce", [2.0], [-1.0], math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)),
     math.log1p(math.exp(1))),
    ("hinge", [0.0, 0.0], [0.0, 0.0], 2.0, 0.0),
    ("hinge", [2.0, 0.5], [-3.0, 0.0], (0.0 + 0.5) / 2 + (0.0 + 1.0) / 2, -(-3.0 + 0.0) / 2),
    ("lsgan", [0.0], [0.0], 0.5, 0.5),
    ("lsgan", [1.0, 3.0], [0.0, 2.0], 0.5 * (0 + 4) / 2 + 0.5 * (0 + 4) / 2, 0.5 * (1 + 1) / 2),
]


@pytest.mark.parametrize("kind, real, fake, d_expected, g_expected", CASES)
def test_loss_values(kind, real, fake, d_expected, g_expected):
    real_t, fake_t = torch.tensor(real), torch.tensor(fake)
    assert discriminator_loss(kind, real_t, fake_t).item() == pytest.approx(d_expected, rel=1e-6)
    assert generator_loss(kind, fake_t).item() == pytest.approx(g_expected, rel=1e-6, abs=1e-7)


# kind -> (real term, fake term) of the discriminator loss, per element.
D_TERMS = {
    "bce": (lambda r: F.softplus(-r), lambda f: F.softplus(f)),
    "hinge": (lambda r: F.relu(1 - r), lambda f: F.relu(1 + f)),
    "lsgan": (lambda r: 0.5 * (r - 1) ** 2, lambda f: 0.5 * f**2),
}


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_patch_maps_and_mismatched_batches_average_each_term(kind):
    real = torch.randn(2, 1, 4, 4, 4)
    fake = torch.randn(3, 1, 4, 4, 4)
    d = discriminator_loss(kind, real, fake)
    real_term, fake_term = D_TERMS[kind]
    assert d.shape == ()
    torch.testing.assert_close(d, real_term(real).mean() + fake_term(fake).mean())
    g = generator_loss(kind, fake)
    assert g.shape == ()
    torch.testing.assert_close(g, generator_loss(kind, fake.flatten()))


def test_bce_matches_binary_cross_entropy_with_logits():
    real, fake = torch.randn(4, 1, 3, 3, 3), torch.randn(4, 1, 3, 3, 3)
    expected = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    torch.testing.assert_close(discriminator_loss("bce", real, fake), expected)
    torch.testing.assert_close(generator_loss("bce", fake),
                               F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake)))


def test_bce_is_stable_for_extreme_logits():
    big = torch.tensor([1e4, -1e4])
    assert torch.isfinite(discriminator_loss("bce", big, big))
    assert generator_loss("bce", torch.tensor([-1e4])).item() == pytest.approx(1e4)


def test_generator_bce_is_non_saturating():
    """When D confidently rejects fakes (very negative logits), the non-saturating loss still
    gives G a gradient of magnitude ~1, while the saturating log(1 - D(G(z))) gives ~0."""
    fake = torch.tensor([-10.0], requires_grad=True)
    generator_loss("bce", fake).backward()
    non_saturating = fake.grad.abs().item()
    fake.grad = None
    (-F.softplus(fake)).mean().backward()  # log(1 - sigmoid(f)) = -softplus(f), minimised by G
    saturating = fake.grad.abs().item()
    assert non_saturating > 0.99
    assert saturating < 1e-4
    assert non_saturating > 1000 * saturating


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_losses_are_float32_under_autocast(kind):
    real = torch.randn(2, 1, 4, 4, 4).bfloat16()
    fake = torch.randn(2, 1, 4, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = discriminator_loss(kind, real, fake)
        g = generator_loss(kind, fake)
    assert d.dtype == torch.float32 and g.dtype == torch.float32
    torch.testing.assert_close(d, discriminator_loss(kind, real.float(), fake.float()))


def test_r1_of_linear_discriminator_is_squared_weight_norm():
    w = torch.randn(1, 2, 3, 3, 3)
    x = torch.randn(4, 2, 3, 3, 3, requires_grad=True)
    logits = (x * w).flatten(1).sum(1, keepdim=True) + 0.7  # D(x) = <w, x> + b, (B, 1)
    r1 = r1_penalty(logits, x)
    assert r1.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)


def test_r1_ignores_fake_rows_of_a_concatenated_batch():
    """D often sees cat(real, fake) in one pass; R1 must average over the real rows only."""
    w = torch.randn(1, 1, 3, 3, 3)
    both = torch.randn(6, 1, 3, 3, 3, requires_grad=True)
    logits = (both * w).flatten(1).sum(1, keepdim=True)
    real_logits, _ = logits.chunk(2, 0)
    assert r1_penalty(real_logits, both).item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)


def test_r1_is_differentiable_wrt_discriminator_parameters():
    d = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                            torch.nn.LazyLinear(1))
    x = torch.randn(2, 1, 5, 5, 5, requires_grad=True)
    r1 = r1_penalty(d(x), x)
    r1.backward()
    assert d[0].weight.grad is not None and d[0].weight.grad.abs().sum() > 0


def test_r1_with_patch_logits():
    w = torch.randn(1, 1, 4, 4, 4)
    x = torch.randn(3, 1, 4, 4, 4, requires_grad=True)
    logits = (x * w)  # a "patch map" whose summed gradient is w
    assert r1_penalty(logits, x).item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)


def test_r1_requires_grad_on_inputs():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="real_inputs"):
        r1_penalty(x.sum(1), x)


@pytest.mark.parametrize("fn", [
    lambda: discriminator_loss("wgan", torch.zeros(1), torch.zeros(1)),
    lambda: generator_loss("wgan", torch.zeros(1)),
])
def test_unknown_kind_names_it(fn):
    with pytest.raises(ValueError, match="'wgan'"):
        fn()
