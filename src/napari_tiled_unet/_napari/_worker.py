"""The one way widgets run engine generators: a napari thread worker with a progress bar and cancel."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import notification_manager, show_warning

from napari_tiled_unet.events import Progress

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.1
"""Seconds between progress updates shown: at most 10 a second."""


class Throttle:
    """Lets a progress event through at most every ``interval`` seconds (always the first and
    the last of a job, and events with metrics or a warning).

    Each shown update costs the GUI thread a relayout and napari's progress bar processes Qt
    events while it updates; per-tile events can come at 50 Hz.
    """

    def __init__(self, interval: float = PROGRESS_INTERVAL) -> None:
        self.interval = interval
        self._shown = -math.inf

    def ready(self, event: Progress) -> bool:
        """Whether to show ``event`` now."""
        now = time.monotonic()
        always = event.metrics or event.warning or event.done in (0, event.total)
        if not always and now - self._shown < self.interval:
            return False
        self._shown = now
        return True


def _drive(engine: Generator[Progress, None, Any]) -> Generator[Progress, None, Any]:
    """Run ``engine`` inside the worker thread and hand its return value to the worker."""
    return (yield from engine)


def start_engine(
    generator_function: Callable[..., Generator[Progress, None, Any]],
    *args: Any,
    on_result: Callable[[Any], None],
    description: str,
    on_progress: Callable[[Progress], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    min_interval: float = PROGRESS_INTERVAL,
    **kwargs: Any,
) -> GeneratorWorker:
    """Run an engine generator in a napari thread worker and start it.

    The generator function is called here, but its body (model loading included) first runs in
    the worker thread. A napari progress bar follows the yielded
    :class:`~napari_tiled_unet.events.Progress` events (its total comes from the events) and is
    closed when the worker finishes, however it finishes. Errors raised by the engine are shown
    as napari error notifications with the exception's message.

    ``worker.quit()`` is Cancel: the engine stops at its next yield, its ``finally`` blocks run
    as soon as the worker has stopped, and ``on_result`` is not called.

    Parameters
    ----------
    generator_function : callable
        An engine generator function such as :func:`~napari_tiled_unet.inference.iter_predict`.
    *args, **kwargs
        Passed to ``generator_function``.
    on_result : callable
        Called on the GUI thread with the generator's return value, only if it ran to the end.
    description : str
        Label of the progress bar.
    on_progress : callable, optional
        Called on the GUI thread with each yielded ``Progress`` event.
    on_error : callable, optional
        Called on the GUI thread with the exception when the engine fails (after the napari
        notification has been sent).
    on_finished : callable, optional
        Called on the GUI thread last, after a result, an error or a cancel.
    min_interval : float
        Seconds between two updates of the progress bar (see :class:`Throttle`); every event
        still reaches ``on_progress``.

    Returns
    -------
    napari.qt.threading.GeneratorWorker
        The started worker; ``worker.quit()`` cancels it.
    """
    engine = generator_function(*args, **kwargs)
    bar = progress(total=0, desc=description)
    finished = False

    throttle = Throttle(min_interval)

    def show_progress(event: Progress) -> None:
        # The callback runs first: napari's progress widgets process Qt events while updating,
        # so later events (and the end of the job) may be handled inside the bar update.
        if on_progress is not None:
            on_progress(event)
        if event.warning:
            show_warning(event.warning)
        if bar.disable or finished or not throttle.ready(event):
            return
        if bar.total != event.total:
            bar.total = event.total
        if event.done != bar.n:
            bar.update(event.done - bar.n)

    def hand_over(result: Any) -> None:
        # A cancel that arrives after the engine returned but before this runs still wins.
        if not worker.abort_requested:
            on_result(result)

    def failed(error: Exception) -> None:
        # napari's workers mean to relay errors themselves, but their notifying mixin is not
        # initialised (napari 0.9.2), so the notification is sent here; it keeps the traceback.
        logger.debug("%s failed", description, exc_info=error)
        notification_manager.receive_error(type(error), error, error.__traceback__)
        if on_error is not None:
            on_error(error)

    def finish() -> None:
        nonlocal finished
        finished = True
        # After a cancel the engine is suspended at a yield: close it now so that its cleanup
        # (e.g. restoring the model's device) happens at once rather than at garbage collection.
        engine.close()
        bar.close()
        if on_finished is not None:
            on_finished()

    worker = create_worker(
        _drive,
        engine,
        _start_thread=False,
        _connect={"yielded": show_progress, "returned": hand_over, "errored": failed},
    )
    worker.finished.connect(finish)
    worker.start()
    return worker
