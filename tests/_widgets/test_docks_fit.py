"""Any two docks fit a 1000 px screen: a dock scrolls instead of growing the window, and is
as wide as its controls (nothing clipped sideways)."""

from __future__ import annotations

import itertools

import pytest

DOCKS = ("Dataset", "Train GAN", "Synthesize & Compare", "Reader Study")


@pytest.mark.parametrize("pair", list(itertools.combinations(DOCKS, 2)),
                         ids=lambda p: " + ".join(p))
def test_two_docks_fit_a_1000_px_screen(make_napari_viewer, qtbot, pair):
    viewer = make_napari_viewer(show=True)  # laid out as on a screen
    docks = [viewer.window.add_plugin_dock_widget("napari-medgan", name)[1] for name in pair]
    from qtpy.QtWidgets import QScrollArea

    def scroll_parts(dock):
        (area,) = dock.findChildren(QScrollArea)[:1]
        return area, area.widget()

    def laid_out():
        return all(d.minimumSizeHint().width() >= scroll_parts(d)[1].minimumSizeHint().width()
                   for d in docks)

    # let the docks fill in their labels (the Train dock's data summary) and lay out again;
    # a Train dock opened earlier in this process may still be warming up beside them
    qtbot.wait(300)
    qtbot.waitUntil(laid_out, timeout=5_000)
    assert viewer.window._qt_window.minimumSizeHint().height() <= 1000
    for dock in docks:
        area, inner = scroll_parts(dock)
        assert area.minimumSizeHint().width() >= inner.minimumSizeHint().width()
        # and the dock follows it: its controls were laid out after the dock took its width
        assert dock.minimumSizeHint().width() >= inner.minimumSizeHint().width()
        assert dock.minimumSizeHint().height() < 300  # it scrolls rather than demand height
