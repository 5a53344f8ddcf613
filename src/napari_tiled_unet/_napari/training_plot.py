"""The Train widget's live plot: training loss and validation score against the step."""

from __future__ import annotations

import math
import time

from napari_tiled_unet.events import Progress

PLOT_MIN_HEIGHT = 110
REDRAW_INTERVAL = 0.5
"""Seconds between two redraws of the plot while training."""


class TrainingPlot:
    """Training loss and validation score against the step, drawn with matplotlib.

    Attributes
    ----------
    steps, losses : list
        Step and training loss of every step so far.
    val_steps, val_scores : list
        Step and validation score (``metric``) of every validation so far.
    """

    def __init__(self, background: str = "white", text: str = "black") -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
        from qtpy.QtCore import QTimer

        self.figure = Figure(figsize=(4, 2.6), layout="constrained", facecolor=background)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(PLOT_MIN_HEIGHT)  # it shrinks before the buttons go
        self.loss_axes = self.figure.add_subplot()
        self.score_axes = self.loss_axes.twinx()
        (self._loss_line,) = self.loss_axes.plot([], [], color="tab:blue", lw=1)
        (self._score_line,) = self.score_axes.plot([], [], "o-", color="tab:orange", ms=3)
        self.loss_axes.set_xlabel("step", fontsize=8)
        self.loss_axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole
        self.loss_axes.set_ylabel("training loss", color="tab:blue", fontsize=8)
        self.score_axes.set_ylim(0, 1)
        self.loss_axes.set_facecolor(background)
        self.loss_axes.xaxis.label.set_color(text)
        for axes in (self.loss_axes, self.score_axes):
            axes.tick_params(labelsize=7, colors=text)
            for spine in axes.spines.values():
                spine.set_color(text)
        self._drawn = -math.inf
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.redraw)
        self.clear("val_iou")

    def clear(self, metric: str) -> None:
        """Forget all points; validation scores will be read from ``metric``."""
        self.metric = metric
        self.steps, self.losses, self.val_steps, self.val_scores = [], [], [], []
        self.score_axes.set_ylabel(metric.replace("_", " "), color="tab:orange", fontsize=8)
        self.redraw()

    def add(self, event: Progress) -> None:
        """Add the loss and validation score carried by a training event, if any."""
        if "loss" in event.metrics:
            self.steps.append(event.done)
            self.losses.append(event.metrics["loss"])
        if self.metric in event.metrics:
            self.val_steps.append(event.done)
            self.val_scores.append(event.metrics[self.metric])
        if event.metrics:
            self._redraw_soon()

    def _redraw_soon(self) -> None:
        """Redraw now, or once :data:`REDRAW_INTERVAL` after the last redraw (a draw costs the
        GUI thread tens of milliseconds; steps can come at many a second)."""
        wait = self._drawn + REDRAW_INTERVAL - time.monotonic()
        if wait <= 0:
            self.redraw()
        elif not self._timer.isActive():
            self._timer.start(int(wait * 1000) + 1)

    def redraw(self) -> None:
        """Draw the points so far now."""
        self._drawn = time.monotonic()
        self._loss_line.set_data(self.steps, self.losses)
        self._score_line.set_data(self.val_steps, self.val_scores)
        self.loss_axes.relim()
        self.loss_axes.autoscale_view()
        self.canvas.draw_idle()
