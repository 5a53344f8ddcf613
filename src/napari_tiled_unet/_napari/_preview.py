"""Live preview while training: the current weights predict the part of the image the canvas shows.

Every :data:`PREVIEW_INTERVAL` seconds (and shortly after the view was panned or zoomed; always
resting :data:`REST_FACTOR` times a preview's compute time after it) the GUI
thread reads the visible box of the training labels layer (napari's ``corner_pixels``, in the
layer's data coordinates) and the current slice of the other axes, and starts a worker that
takes a copy of the weights between two training steps
(:meth:`~napari_tiled_unet.training.session.WeightSnapshots.take`), predicts the box plus the
network's context with the tiled engine, and writes the box into a Labels layer
``"<image> preview"``. The rest of that layer keeps what earlier previews wrote. Only one
preview runs at a time; the GUI thread never computes one.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import create_worker
from qtpy.QtCore import QTimer

from napari_tiled_unet._napari._layers import layer_data, result_layer_kwargs

if TYPE_CHECKING:
    from napari.layers import Image, Labels
    from napari.qt.threading import GeneratorWorker
    from napari.viewer import Viewer

    from napari_tiled_unet.axes import Layout
    from napari_tiled_unet.training import Trainer

logger = logging.getLogger(__name__)

#: Default seconds between the starts of two previews. Measured on a 2-core CPU
#: (benchmarks/results/train_while_painting.md): a preview of a 512 x 512 view plus context
#: took 0.29 s with a base-16 depth-3 network and 1.88 s with the widget's default base-32
#: depth-4 one, one training step (tile 256, batch 4) 0.47 s and 2.23 s (under a load average
#: of 9-15: 2.4 s, 9.9 s, 8 s and 20 s). Whatever the setting, a
#: preview starts no sooner than :data:`REST_FACTOR` times its predecessor's compute time after
#: it ended, so previews take at most about a third of the time training runs.
PREVIEW_INTERVAL = 5.0
#: Rest after a preview, in units of its compute time.
REST_FACTOR = 2.0
#: Milliseconds after the last pan or zoom before the preview follows the view.
FOLLOW_DELAY_MS = 300


@dataclass(frozen=True)
class View:
    """What the canvas shows of the labels layer: per labels axis the visible box (``start``,
    ``stop``) and the current position (``point``); ``displayed`` are the axes on screen."""

    start: tuple
    stop: tuple
    point: tuple
    displayed: frozenset


@dataclass(frozen=True)
class PreviewRegion:
    """Where a preview reads and writes.

    Attributes
    ----------
    index : tuple of (slice or int)
        Per labels axis, the part of the preview layer written (an int fixes a frame axis).
    crop : tuple of (slice or int)
        Per image axis, the part of the image read: the box plus context, all channels.
    crop_axes : str
        Axis letters of the cropped image (fixed axes dropped).
    inner : tuple of slice
        The written part within the crop's prediction.
    """

    index: tuple
    crop: tuple
    crop_axes: str
    inner: tuple


def preview_region(
    layout: Layout,
    start: Any,
    stop: Any,
    point: Any,
    displayed: Any,
    context: dict[str, int],
) -> PreviewRegion | None:
    """The region to preview for a view of the labels layer.

    Parameters
    ----------
    layout : Layout
        How the training job reads the image (its axis letters; labels have them without C).
    start, stop : sequence of int
        The visible box per labels axis (used for the displayed axes).
    point : sequence of int
        The current position per labels axis (used for the others).
    displayed : collection of int
        The labels axes on screen.
    context : dict
        Context pixels per spatial letter of the model (e.g. ``{"Y": 44, "X": 44}``).

    Returns
    -------
    PreviewRegion or None
        None if the box is empty (the layer is out of view).
    """
    letters = [a for a in layout.axes if a != "C"]
    shape = [n for a, n in zip(layout.axes, layout.shape, strict=True) if a != "C"]
    index, crop_of, inner, kept = [], {}, [], []
    for axis, (letter, n) in enumerate(zip(letters, shape, strict=True)):
        if letter in layout.spatial_letters:
            if axis in displayed:
                a, b = max(0, int(start[axis])), min(n, int(stop[axis]))
            else:
                a = min(max(int(point[axis]), 0), n - 1)
                b = a + 1
            if b <= a:
                return None
            lo, hi = max(0, a - context[letter]), min(n, b + context[letter])
            index.append(slice(a, b))
            crop_of[letter] = slice(lo, hi)
            inner.append(slice(a - lo, b - lo))
            kept.append(letter)
        else:
            k = min(max(int(point[axis]), 0), n - 1)
            index.append(k)
            crop_of[letter] = k
    crop = tuple(slice(None) if a == "C" else crop_of[a] for a in layout.axes)
    crop_axes = "".join(a for a in layout.axes if a == "C" or a in kept)
    return PreviewRegion(tuple(index), crop, crop_axes, tuple(inner))


def compute_preview(
    trainer: Trainer, image: Any, layout: Layout, view: View, timeout: float = 60.0
) -> Generator[Any, None, tuple[PreviewRegion, np.ndarray, float] | None]:
    """Predict the ``view`` of ``image`` with the run's current weights (in a worker thread).

    The visible box is read with the network's context (its halo) on each side, so the
    written part is what the whole image's prediction would hold there.

    The weights are copied between two training steps; the image is normalised as training
    normalises it (resolved once over the whole image), so the preview shows what the
    network has learnt, not a different intensity mapping of a crop. In sparse mode the
    classes are shown as the painted values (class k as k + 1).

    Returns
    -------
    (PreviewRegion, ndarray, float) or None
        The region, the labels to write at its ``index`` and the seconds spent after the
        weights came; None without weights yet.
    """
    from napari_tiled_unet.inference import iter_predict

    state = trainer.snapshots.take(timeout)
    started = time.monotonic()
    model = None if state is None else trainer.model_of(state)
    if model is None:
        return None
    context = {
        letter: int(max(axis.halo))
        for letter, axis in zip(layout.spatial_letters, model.geometry.axes, strict=True)
    }
    region = preview_region(layout, view.start, view.stop, view.point, view.displayed, context)
    if region is None:
        return None
    pair = trainer.pairs[0]
    model.info = dataclasses.replace(model.info, normalization=pair.normalization)
    from napari_tiled_unet.training.targets import INSTANCE_MODES

    mode = trainer.config.label_mode
    crop = np.asarray(image[region.crop])
    result = yield from iter_predict(
        crop,
        model,
        axes=region.crop_axes,
        channels=layout.channels,
        device=trainer.config.device,
        output="instances" if mode in INSTANCE_MODES else "labels",
        name=f"preview of {pair.image_name}",
    )
    labels = np.asarray(result)[region.inner]
    if mode == "sparse":
        labels = labels.astype(np.uint16) + 1
    return region, labels, time.monotonic() - started


class LivePreview:
    """Keeps a ``"<image> preview"`` Labels layer showing what the training network predicts.

    Parameters
    ----------
    viewer : Viewer
    interval : float
        Seconds between previews.

    Attributes
    ----------
    layer : Labels or None
        The preview layer.
    shown : list of PreviewRegion
        The regions written so far, in order.
    running : bool
        Whether a preview is being computed.
    """

    def __init__(self, viewer: Viewer, interval: float = PREVIEW_INTERVAL):
        self._viewer = viewer
        self.interval = interval
        self.layer: Labels | None = None
        self.shown: list[PreviewRegion] = []
        self.error: str = ""
        self._worker: GeneratorWorker | None = None
        self._trainer: Trainer | None = None
        self._timer = QTimer()
        self._timer.timeout.connect(self.update)
        self._follow = QTimer()
        self._follow.setSingleShot(True)
        self._follow.timeout.connect(self.update)
        self._following = False
        self._ready_at = 0.0
        #: Seconds the last preview took (reading and prediction, not the wait for weights).
        self.last_compute = 0.0
        #: Seconds the GUI thread spent writing the last preview into its layer.
        self.last_show = 0.0

    @property
    def running(self) -> bool:
        return self._worker is not None

    def start(self, trainer: Trainer, image: Image, labels: Labels, layout: Layout) -> Labels:
        """Preview ``trainer``'s weights on ``image`` (read as ``layout``) every
        :attr:`interval` seconds, in the view of ``labels``; returns the preview layer."""
        self._trainer, self._image, self._labels, self._layout = trainer, image, labels, layout
        self.layer = self._preview_layer(image, labels, trainer.config.label_mode)
        self._timer.start(max(1, int(self.interval * 1000)))
        if not self._following:
            self._viewer.camera.events.center.connect(self._view_moved)
            self._viewer.camera.events.zoom.connect(self._view_moved)
            self._viewer.dims.events.current_step.connect(self._view_moved)
            self._following = True
        self.update()
        return self.layer

    def stop(self) -> None:
        """No more previews; one being computed is cancelled at its next tile."""
        self._timer.stop()
        self._follow.stop()
        self._trainer = None
        if self._following:
            self._viewer.camera.events.center.disconnect(self._view_moved)
            self._viewer.camera.events.zoom.disconnect(self._view_moved)
            self._viewer.dims.events.current_step.disconnect(self._view_moved)
            self._following = False
        if self._worker is not None:
            self._worker.quit()

    def _view_moved(self, _event=None) -> None:
        if self._trainer is not None:
            wait = max(FOLLOW_DELAY_MS, int(1000 * (self._ready_at - time.monotonic())))
            self._follow.start(wait)

    def _preview_layer(self, image: Image, labels: Labels, mode: str) -> Labels:
        from napari_tiled_unet.training.targets import INSTANCE_MODES

        name = f"{image.name} preview"
        shape = tuple(layer_data(labels).shape)
        dtype = np.int32 if mode in INSTANCE_MODES else np.uint16
        existing = self._viewer.layers[name] if name in self._viewer.layers else None
        if existing is not None and existing.data.shape == shape and existing.data.dtype == dtype:
            return existing
        layers = self._viewer.layers
        if existing is not None:
            layers.remove(existing)
        # The user goes on painting: the labels layer stays selected and above the preview.
        active = layers.selection.active
        layer = self._viewer.add_labels(
            np.zeros(shape, dtype),
            name=name,
            opacity=0.5,
            **result_layer_kwargs(labels, shape),
        )
        if labels in layers:
            layers.move(layers.index(layer), layers.index(labels))
        if active is not None and active in layers:
            layers.selection.active = active
        return layer

    def view(self) -> View:
        """What the canvas shows now (GUI thread; cheap)."""
        labels, viewer = self._labels, self._viewer
        corners = np.asarray(labels.corner_pixels)
        point = np.round(labels.world_to_data(viewer.dims.point)).astype(int)
        offset = viewer.dims.ndim - labels.ndim
        displayed = {d - offset for d in viewer.dims.displayed if d >= offset}
        return View(tuple(corners[0]), tuple(corners[1] + 1), tuple(point), frozenset(displayed))

    def update(self) -> None:
        """Start a preview of the current view unless one is running (GUI thread)."""
        if self._trainer is None or self._worker is not None or self.layer is None:
            return
        if time.monotonic() < self._ready_at:  # resting after the last preview
            return
        worker = create_worker(
            compute_preview,
            self._trainer,
            layer_data(self._image),
            self._layout,
            self.view(),
            _start_thread=False,
        )
        worker.returned.connect(self._show)
        worker.errored.connect(self._failed)
        worker.finished.connect(self._done)
        self._worker = worker
        worker.start()

    def _show(self, result) -> None:
        if result is None or self.layer is None or self.layer not in self._viewer.layers:
            return
        started = time.perf_counter()
        region, labels, self.last_compute = result
        self.layer.data[region.index] = labels
        self.layer.refresh()
        self.shown.append(region)
        self.last_show = time.perf_counter() - started

    def _failed(self, error: Exception) -> None:
        self.error = str(error)
        logger.warning("preview failed: %s", error)

    def _done(self) -> None:
        self._worker = None
        self._ready_at = time.monotonic() + REST_FACTOR * self.last_compute
