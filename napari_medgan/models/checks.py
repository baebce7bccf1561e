"""Input checks shared by the networks (one message for every model)."""

from __future__ import annotations

import torch


def check_input(x: torch.Tensor, channels: int, multiple: int, what: str) -> None:
    """ValueError naming ``what`` unless ``x`` is ``(B, channels, D, H, W)`` with D, H, W
    divisible by ``multiple``."""
    if x.ndim != 5 or x.shape[1] != channels:
        raise ValueError(f"{what}: expected 5-D input (B, {channels}, D, H, W), got shape "
                         f"{tuple(x.shape)}")
    if any(s % multiple for s in x.shape[2:]):
        raise ValueError(f"{what}: expected spatial sizes divisible by {multiple}, got shape "
                         f"{tuple(x.shape)}")
