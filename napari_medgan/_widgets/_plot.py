"""A small live loss plot (matplotlib in Qt), redrawn at most every ``interval_ms``.

Drawing a figure costs tens of milliseconds on the main thread, so points are
buffered and the canvas is redrawn by a single-shot timer, never per step.
"""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

#: loss name -> (colour, axis); L1 has its own scale (right axis).
CURVES = {"G": ("#e6a23c", "left"), "D": ("#5dade2", "left"), "L1": ("#58d68d", "right")}


class LossPlot(QWidget):
    """Generator, discriminator and (for conditional models) L1 losses against the step."""

    def __init__(self, background: str = "#262930", foreground: str = "#f0f1f2",
                 interval_ms: int = 500, parent=None) -> None:
        super().__init__(parent)
        # fixed margins: a constrained layout doubles the cost of every redraw
        self.figure = Figure(figsize=(3.2, 1.9), dpi=90, facecolor=background)
        self.figure.subplots_adjust(left=0.14, right=0.86, bottom=0.22, top=0.95)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.canvas.setFixedHeight(190)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.ax = self.figure.add_subplot(facecolor=background)
        self.ax_right = self.ax.twinx()
        for ax in (self.ax, self.ax_right):
            ax.tick_params(colors=foreground, labelsize=7)
            for spine in ax.spines.values():
                spine.set_color(foreground)
        self.ax.set_xlabel("step", color=foreground, fontsize=8)
        self.ax.set_ylabel("G / D loss", color=foreground, fontsize=8)
        self.ax_right.set_ylabel("L1", color=CURVES["L1"][0], fontsize=8)
        self.lines = {}
        for name, (colour, side) in CURVES.items():
            axis = self.ax if side == "left" else self.ax_right
            (self.lines[name],) = axis.plot([], [], color=colour, lw=1.2, label=name)
        self.ax.legend(handles=[self.lines["G"], self.lines["D"]], loc="upper right",
                       fontsize=7, facecolor=background, labelcolor=foreground, frameon=False)
        self.data: dict[str, tuple[list[int], list[float]]] = {}
        self.draws = 0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.redraw)

    def clear(self) -> None:
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
        for name, line in self.lines.items():
            line.set_data(*self.data.get(name, ([], [])))
        self.ax_right.set_visible("L1" in self.data)
        for ax in (self.ax, self.ax_right):
            ax.relim()
            ax.autoscale_view()
        self.canvas.draw_idle()
        self.draws += 1
