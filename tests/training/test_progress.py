"""Long synthesis reports progress: volumes drawn, or batches of sliding windows run."""

from __future__ import annotations

import pytest
import torch

from napari_medgan.training.inference import generate, load_generator, run_windows


class _Counting(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x[:, :1]


@pytest.mark.parametrize("shape", [(16, 16, 16), (40, 33, 17), (70, 20, 50), (8, 40, 16)])
def test_window_progress_counts_exactly_the_batches_monai_runs(shape):
    ticks, plain, watched = [], _Counting(), _Counting()
    condition = torch.zeros(1, 2, *shape)
    run_windows(plain, condition, 16, overlap=0.5, sw_batch_size=2)
    run_windows(watched, condition, 16, overlap=0.5, sw_batch_size=2,
                progress=lambda done, total: ticks.append((done, total)))
    assert watched.calls == plain.calls
    assert ticks == [(i, plain.calls) for i in range(1, plain.calls + 1)]


def test_sample_progress_follows_each_batch(tmp_path, tiny_run):
    from napari_medgan.training.trainer import Trainer

    for _ in Trainer(tiny_run(tmp_path / "run", steps=1)).run():
        pass
    ticks = []
    images, _ = generate(load_generator(tmp_path / "run", device="cpu"), 9, batch_size=4,
                         progress=lambda done, total: ticks.append((done, total)))
    assert len(images) == 9 and ticks == [(4, 9), (8, 9), (9, 9)]
