"""Whole-volume conditional inference: the flip self-ensemble averages the right things."""

from __future__ import annotations

import pytest
import torch

from napari_medgan.training.inference import FLIPS, run_windows


class _Ramp(torch.nn.Module):
    """The input plus a ramp along the window's first axis: not flip-equivariant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-1.0, 1.0, x.shape[2]).view(1, 1, -1, 1, 1)
        return x[:, :1] + ramp


def test_the_flips_are_the_eight_subsets_of_the_three_axes():
    assert len(FLIPS) == 8 == len(set(FLIPS)) and FLIPS[0] == ()
    assert all(set(d) <= {2, 3, 4} for d in FLIPS)


def test_flip_ensemble_flips_each_result_back_before_averaging():
    # one window (the volume is the patch): a pass on the flipped input sees the ramp
    # reversed relative to the content, so the average cancels it and leaves the input itself;
    # forgetting to flip back would leave an average of flipped copies of the input instead
    condition = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    single = run_windows(_Ramp(), condition, 16)
    torch.testing.assert_close(single - condition, _Ramp()(torch.zeros_like(condition)))
    ensemble = run_windows(_Ramp(), condition, 16, flips=True)
    torch.testing.assert_close(ensemble, condition, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(16, 16, 16), (40, 33, 17)])
def test_flip_ensemble_progress_counts_every_pass(shape):
    ticks = []
    condition = torch.zeros(1, 1, *shape)
    run_windows(_Ramp(), condition, 16, sw_batch_size=2,
                progress=lambda done, total: ticks.append((done, total)))
    one_pass = len(ticks)
    ticks.clear()
    run_windows(_Ramp(), condition, 16, sw_batch_size=2, flips=True,
                progress=lambda done, total: ticks.append((done, total)))
    assert ticks == [(i, 8 * one_pass) for i in range(1, 8 * one_pass + 1)]
