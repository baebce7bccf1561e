"""Adversarial losses on discriminator logits, and the R1 gradient penalty.

Losses take raw logits of any shape (``(B, 1)`` from a global discriminator,
``(B, 1, d, h, w)`` from a PatchGAN) and average over every element. They are
computed in float32 with autocast disabled: under bf16/fp16 the difference
between a softplus of large logits and its linear asymptote, or a squared
error near zero, is below the half-precision resolution.

Kinds
-----
``"bce"``
    Non-saturating GAN (Goodfellow et al., "Generative Adversarial Nets",
    NeurIPS 2014, Sec. 3): D minimises ``-log D(x) - log(1 - D(G(z)))`` and G
    minimises ``-log D(G(z))`` instead of ``log(1 - D(G(z)))``, whose gradient
    vanishes when D confidently rejects fakes. With ``D = sigmoid(logit)``:
    ``-log D = softplus(-logit)`` and ``-log(1 - D) = softplus(logit)``.
``"hinge"``
    Lim & Ye, "Geometric GAN", 2017; Miyato et al., "Spectral Normalization
    for GANs", ICLR 2018: D minimises ``relu(1 - real) + relu(1 + fake)``,
    G minimises ``-fake``.
``"lsgan"``
    Mao et al., "Least Squares Generative Adversarial Networks", ICCV 2017,
    with targets a = 0 (fake), b = c = 1 (real): D minimises
    ``0.5 (real - 1)^2 + 0.5 fake^2``, G minimises ``0.5 (fake - 1)^2``.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

__all__ = ["LOSS_KINDS", "discriminator_loss", "generator_loss", "r1_penalty"]

LOSS_KINDS = ("bce", "hinge", "lsgan")


def _check_kind(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise ValueError(f"loss kind: expected one of {LOSS_KINDS}, got {kind!r}")


def _no_autocast(t: torch.Tensor):
    if t.device.type in ("cpu", "cuda", "mps", "xpu"):
        return torch.autocast(device_type=t.device.type, enabled=False)
    return contextlib.nullcontext()  # devices without autocast (e.g. meta) need no guard


def discriminator_loss(kind: str, real_logits: torch.Tensor,
                       fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss for ``kind`` in ("bce", "hinge", "lsgan"); see the module docstring.

    Parameters
    ----------
    kind : str
        Loss family.
    real_logits, fake_logits : Tensor
        Raw discriminator outputs on real and generated samples, any shapes
        (they need not match: each term is averaged on its own).

    Returns
    -------
    Scalar float32 tensor: mean real term + mean fake term.
    """
    _check_kind(kind)
    with _no_autocast(real_logits):
        real, fake = real_logits.float(), fake_logits.float()
        if kind == "bce":
            return F.softplus(-real).mean() + F.softplus(fake).mean()
        if kind == "hinge":
            return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
        return 0.5 * (real - 1.0).pow(2).mean() + 0.5 * fake.pow(2).mean()


def generator_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator (adversarial) loss for ``kind``; ``"bce"`` is the non-saturating ``-log D(G(z))``.

    Returns a scalar float32 tensor, averaged over every element of ``fake_logits``.
    """
    _check_kind(kind)
    with _no_autocast(fake_logits):
        fake = fake_logits.float()
        if kind == "bce":
            return F.softplus(-fake).mean()
        if kind == "hinge":
            return -fake.mean()
        return 0.5 * (fake - 1.0).pow(2).mean()


def r1_penalty(real_logits: torch.Tensor, real_inputs: torch.Tensor,
               scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """R1 gradient penalty, ``E_x ||grad_x D(x)||^2`` on real data.

    Mescheder, Geiger & Nowozin, "Which Training Methods for GANs do actually
    Converge?", ICML 2018. The caller multiplies by ``gamma / 2``. For a
    PatchGAN the gradient is that of the summed logit map, as in StyleGAN2.

    Parameters
    ----------
    real_logits : Tensor
        ``D(real_inputs)``, any shape with batch first.
    real_inputs : Tensor or sequence of Tensors
        The real batch ``(B, C, D, H, W)`` (several, for a discriminator with several
        inputs: the squared gradient norms add up), or a batch whose first ``B`` rows
        are the real samples behind ``real_logits`` (e.g. real and fake
        concatenated for one D pass); must have ``requires_grad=True`` set
        *before* it went through D.
    scaler : GradScaler, optional
        The discriminator's fp16 loss scaler: the gradient is taken of the scaled logits
        and divided back, so that small fp16 gradients do not underflow (the gradient
        penalty recipe of ``torch.amp``). An overflow gives an infinite penalty, which
        makes the scaler skip the step.

    Returns
    -------
    Scalar float32 tensor, differentiable (the graph is kept) so it can be
    added to the discriminator loss and back-propagated.
    """
    inputs = tuple(real_inputs) if isinstance(real_inputs, (tuple, list)) else (real_inputs,)
    if not all(t.requires_grad for t in inputs):
        raise ValueError("real_inputs: expected a tensor with requires_grad=True (call "
                         "real.requires_grad_(True) before the discriminator), got one without")
    if not real_logits.requires_grad:
        raise ValueError("real_logits: expected the discriminator output on real_inputs, "
                         "got a tensor with no graph")
    total = real_logits.float().sum()
    scaled = scaler is not None and scaler.is_enabled()
    if scaled:
        total = scaler.scale(total)
    grads = torch.autograd.grad(total, inputs, create_graph=True)
    if scaled:  # the scale as a device tensor: no host sync
        scale = getattr(scaler, "_get_scale_async", scaler.get_scale)()
        grads = [g / scale for g in grads]
    # Divide by the number of *real* samples, not by len(real_inputs): a caller may pass one
    # concatenated real+fake batch through D; the fake rows then get zero gradient and must
    # not dilute the mean (D has no batch-coupling norm, so samples are independent).
    with _no_autocast(grads[0]):
        return sum(g.float().pow(2).sum() for g in grads) / real_logits.shape[0]
