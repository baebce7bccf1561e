"""A small live loss plot, painted with QPainter, repainted at most every ``interval_ms``.

A matplotlib canvas took 20-190 ms of the main thread per redraw on a loaded 2-core
machine (benchmarks/ui_latency.py): the worst stall of the viewer while a run trained.
Painting two or three polylines and a few tick labels with QPainter takes about a
millisecond, and a curve longer than the plot is wide is drawn as its per-pixel-column
min/max envelope, so a run of 10^5 steps costs no more than one of 100.
"""

from __future__ import annotations

import math
import time

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt, QTimer
from qtpy.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

#: loss name -> (colour, axis); L1 has its own scale (right axis).
CURVES = {"G": ("#e6a23c", "left"), "D": ("#5dade2", "left"), "L1": ("#58d68d", "right")}
_MARGINS = (44, 8, 46, 30)  # left, top, right, bottom (px): tick labels, axis titles


def nice_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """About ``count`` round values (1, 2, 2.5, 5 x 10^k steps) covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def envelope(xs: np.ndarray, ys: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``2 * columns`` points drawing the same picture as ``(xs, ys)``: for each of
    ``columns`` equal bins of x (ascending), the bin's minimum then maximum."""
    if xs.size <= 2 * columns:
        return xs, ys
    bins = ((xs - xs[0]) / max(xs[-1] - xs[0], 1e-12) * (columns - 1)).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    lows, highs = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts)
    centres = xs[starts]
    return np.repeat(centres, 2), np.column_stack([lows, highs]).ravel()


def _label(value: float) -> str:
    """A tick label: whole numbers in full up to a million (steps), else 3 digits."""
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}"


class LossPlot(QWidget):
    """Generator, discriminator and (for conditional models) L1 losses against the step.

    ``data`` holds every point as ``name -> (steps, values)``; ``draws`` counts the
    requested redraws and ``paint_ms`` the time of the last paint.
    """

    def __init__(self, background: str = "#262930", foreground: str = "#f0f1f2",
                 interval_ms: int = 500, parent=None) -> None:
        super().__init__(parent)
        self.background, self.foreground = QColor(background), QColor(foreground)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(190)
        self.setMinimumWidth(240)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.data: dict[str, tuple[list[int], list[float]]] = {}
        self.draws = 0
        self.paint_ms = 0.0
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.redraw)

    def clear(self) -> None:
        self._cache.clear()
        if self.data:
            self.data.clear()
            self.redraw()

    def add(self, step: int, losses: dict[str, float]) -> None:
        """Buffer one point per loss; schedules a redraw (at most one per interval)."""
        for name in CURVES:
            if name in losses:
                xs, ys = self.data.setdefault(name, ([], []))
                xs.append(step)
                ys.append(float(losses[name]))
        if not self._timer.isActive():
            self._timer.start()

    def redraw(self) -> None:
        """Repaint on the next turn of the event loop (Qt merges repeated requests)."""
        self.draws += 1
        self.update()

    def _arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Curve ``name`` as float arrays, converting only the points added since the last
        paint (a list of 10^5 floats takes milliseconds to convert)."""
        xs, ys = self.data[name]
        cached = self._cache.get(name)
        if cached is None or cached[0].size > len(xs) or (
                cached[0].size and cached[0][-1] != xs[cached[0].size - 1]):
            cached = (np.empty(0), np.empty(0))  # cleared or replaced: start again
        n = cached[0].size
        if n < len(xs):
            cached = (np.concatenate([cached[0], np.asarray(xs[n:], float)]),
                      np.concatenate([cached[1], np.asarray(ys[n:], float)]))
        self._cache[name] = cached
        return cached

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        try:
            self.draw_now(painter)
        finally:
            painter.end()

    def draw_now(self, painter: QPainter) -> None:
        """Paint the frame, ticks, curves and legend (the whole of a repaint)."""
        t0 = time.perf_counter()
        painter.fillRect(self.rect(), self.background)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        font = QFont(self.font())
        font.setPointSizeF(7.5)
        painter.setFont(font)
        left, top, right, bottom = _MARGINS
        plot = QRectF(left, top, max(self.width() - left - right, 10),
                      max(self.height() - top - bottom, 10))
        curves = {name: self._arrays(name) for name, (xs, _) in self.data.items() if xs}
        xs_all = [xs for xs, _ in curves.values()]
        x_lo = min((float(xs.min()) for xs in xs_all), default=0.0)
        x_hi = max((float(xs.max()) for xs in xs_all), default=1.0)
        if x_hi <= x_lo:
            x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
        axes = {side: _y_range([ys for n, (_, ys) in curves.items() if CURVES[n][1] == side])
                for side in ("left", "right")}
        self._draw_axes(painter, plot, (x_lo, x_hi), axes, "L1" in curves)
        painter.setClipRect(plot)
        for name, (xs, ys) in curves.items():
            colour, side = CURVES[name]
            y_lo, y_hi = axes[side]
            keep = np.isfinite(ys)
            px, py = envelope(xs[keep], ys[keep], int(plot.width()))
            sx = plot.left() + (px - x_lo) / (x_hi - x_lo) * plot.width()
            sy = plot.bottom() - (py - y_lo) / (y_hi - y_lo) * plot.height()
            painter.setPen(_pen(colour))
            painter.drawPolyline(QPolygonF([QPointF(a, b) for a, b in zip(sx, sy)]))
        painter.setClipping(False)
        self._draw_legend(painter, plot, [n for n in ("G", "D") if n in curves] or ["G", "D"])
        self.paint_ms = (time.perf_counter() - t0) * 1000

    def _draw_axes(self, painter, plot: QRectF, x_range, axes: dict, with_l1: bool) -> None:
        metrics = painter.fontMetrics()
        painter.setPen(QPen(self.foreground, 1))
        painter.drawRect(plot)
        x_lo, x_hi = x_range
        for x in nice_ticks(x_lo, x_hi, 4):
            sx = plot.left() + (x - x_lo) / (x_hi - x_lo) * plot.width()
            painter.drawLine(QPointF(sx, plot.bottom()), QPointF(sx, plot.bottom() + 3))
            text = _label(x)
            painter.drawText(QPointF(sx - metrics.horizontalAdvance(text) / 2,
                                     plot.bottom() + 4 + metrics.ascent()), text)
        painter.drawText(QPointF(plot.center().x() - metrics.horizontalAdvance("step") / 2,
                                 self.height() - 3), "step")
        sides = [("left", self.foreground)] + ([("right", QColor(CURVES["L1"][0]))]
                                               if with_l1 else [])
        for side, colour in sides:
            y_lo, y_hi = axes[side]
            painter.setPen(QPen(colour, 1))
            for y in nice_ticks(y_lo, y_hi, 4):
                sy = plot.bottom() - (y - y_lo) / (y_hi - y_lo) * plot.height()
                text = _label(y)
                width = metrics.horizontalAdvance(text)
                if side == "left":
                    painter.drawLine(QPointF(plot.left() - 3, sy), QPointF(plot.left(), sy))
                    painter.drawText(QPointF(plot.left() - 5 - width, sy + metrics.ascent() / 2 - 1),
                                     text)
                else:
                    painter.drawLine(QPointF(plot.right(), sy), QPointF(plot.right() + 3, sy))
                    painter.drawText(QPointF(plot.right() + 5, sy + metrics.ascent() / 2 - 1), text)
        painter.setPen(QPen(self.foreground, 1))
        _vertical_text(painter, QPointF(9, plot.center().y()), "G / D loss")
        if with_l1:
            painter.setPen(QPen(QColor(CURVES["L1"][0]), 1))
            _vertical_text(painter, QPointF(self.width() - 4, plot.center().y()), "L1")

    def _draw_legend(self, painter, plot: QRectF, names: list[str]) -> None:
        metrics = painter.fontMetrics()
        x = plot.right() - 6
        width = sum(metrics.horizontalAdvance(n) + 22 for n in names)
        painter.fillRect(QRectF(x - width - 2, plot.top() + 1, width + 4, metrics.height() + 4),
                         self.background)  # readable over the curves
        for name in reversed(names):
            x -= metrics.horizontalAdvance(name) + 22
            colour = QColor(CURVES[name][0])
            y = plot.top() + 4 + metrics.ascent() / 2
            painter.setPen(_pen(colour))
            painter.drawLine(QPointF(x, y), QPointF(x + 14, y))
            painter.setPen(QPen(self.foreground, 1))
            painter.drawText(QPointF(x + 17, y + metrics.ascent() / 2 - 1), name)


def _pen(colour) -> QPen:
    """A 1 px cosmetic pen: a wider antialiased one costs Qt's stroker ~40 ms for a noisy
    600-point curve, this one under a millisecond."""
    pen = QPen(QColor(colour), 1.0)
    pen.setCosmetic(True)
    return pen


def _y_range(series: list[np.ndarray]) -> tuple[float, float]:
    """The finite range of ``series`` with 5% headroom (0..1 when there is nothing)."""
    finite = [ys[np.isfinite(ys)] for ys in series]
    finite = [ys for ys in finite if ys.size]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(float(ys.min()) for ys in finite), max(float(ys.max()) for ys in finite)
    pad = (hi - lo) * 0.05 or max(abs(hi) * 0.05, 0.05)
    return lo - pad, hi + pad


def _vertical_text(painter, centre: QPointF, text: str) -> None:
    """``text`` rotated to read bottom to top, centred on ``centre``."""
    width = painter.fontMetrics().horizontalAdvance(text)
    painter.save()
    painter.translate(centre)
    painter.rotate(-90)
    painter.drawText(QPointF(-width / 2, 0), text)
    painter.restore()
