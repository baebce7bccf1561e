"""The time-left estimate shown by the Train dock."""

from __future__ import annotations

import pytest

from napari_medgan.training.console import RemainingTime, format_duration


def test_time_left_follows_the_recent_step_rate_and_ignores_a_pause():
    eta = RemainingTime(window=10)
    assert eta.update(1, 101, now=0.0) is None  # one step: no rate yet
    for step in range(2, 12):
        left = eta.update(step, 101, now=(step - 1) * 0.5)  # 0.5 s per step
    assert left == pytest.approx(90 * 0.5)
    left = eta.update(12, 101, now=5.0 + 600.0)  # a ten-minute pause before step 12
    assert left == pytest.approx(89 * 0.5)  # the pause is not a step rate
    assert eta.update(101, 101, now=1000.0) == 0.0


def test_durations_read_as_a_person_would_say_them():
    assert format_duration(45) == "45 s"
    assert format_duration(12 * 60 + 10) == "12 min"
    assert format_duration(2 * 3600 + 5 * 60) == "2 h 05 min"
