"""What runs beside a training run in the Train widget: the live preview, the labels that flow
in, and a clean stop when the viewer closes.

:class:`LiveSession` starts both when a run (or a Continue) starts and ends them when it ends;
:meth:`LiveSession.shutdown` cancels everything and waits for the threads, for a viewer that
closes while training runs.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from qtpy.QtCore import QEvent, QObject, QThreadPool

from napari_tiled_unet._napari._live_labels import LabelsFollower
from napari_tiled_unet._napari._preview import LivePreview

if TYPE_CHECKING:
    from napari.layers import Image, Labels
    from napari.viewer import Viewer

    from napari_tiled_unet.axes import Layout
    from napari_tiled_unet.training import Trainer

#: Milliseconds a closing viewer waits for the training and preview threads to stop.
SHUTDOWN_WAIT_MS = 60_000


class _CloseFilter(QObject):
    """Calls ``on_close`` when the watched window gets its close event."""

    def __init__(self, on_close: Callable[[], None]):
        super().__init__()
        self._on_close = on_close

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.Type.Close:
            self._on_close()
        return False


class LiveSession:
    """The preview and the painted-labels forwarding of one Train widget.

    Parameters
    ----------
    viewer : Viewer
    on_close : callable
        Called when the viewer's window closes (the widget stops its run there).

    Attributes
    ----------
    preview : LivePreview
    follower : LabelsFollower or None
        Forwards paint while a run steps.
    """

    def __init__(self, viewer: Viewer, on_close: Callable[[], None]):
        self.preview = LivePreview(viewer)
        self.follower: LabelsFollower | None = None
        self._close_filter = _CloseFilter(on_close)
        self._window: weakref.ref | None = None  # a strong one would keep a closed viewer

    def watch_close(self, widget) -> None:
        """Watch the top-level window ``widget`` (a QWidget) is docked in."""
        window = widget.window()
        watched = None if self._window is None else self._window()
        if window is not watched and window is not widget:
            if watched is not None:
                watched.removeEventFilter(self._close_filter)
            window.installEventFilter(self._close_filter)
            self._window = weakref.ref(window)

    def start(
        self,
        trainer: Trainer,
        image: Image,
        labels: list[Labels],
        layout: Layout,
        preview: bool,
        interval: float,
    ) -> None:
        """Follow paint on ``labels`` and, if ``preview``, preview ``image`` every
        ``interval`` seconds, while ``trainer`` runs."""
        self.end()
        self.follower = LabelsFollower(trainer, labels)
        if preview:
            self.preview.interval = interval
            self.preview.start(trainer, image, labels[0], layout)

    def end(self) -> None:
        """The run ended: no more previews or forwarding (a preview running is cancelled)."""
        self.preview.stop()
        if self.follower is not None:
            self.follower.close()
            self.follower = None

    def shutdown(self, quit_run: Callable[[], None]) -> bool:
        """Cancel the preview and (``quit_run``) the training, and wait for their threads.

        Returns whether every worker thread finished within :data:`SHUTDOWN_WAIT_MS`.
        """
        self.end()
        quit_run()
        return QThreadPool.globalInstance().waitForDone(SHUTDOWN_WAIT_MS)
