"""Import torch in a background thread when a widget opens, not at the first Run or Train.

The first job in a session otherwise imports torch in the worker thread, which holds the GIL
for long stretches while the user watches (``benchmarks/gui_stall.py``: the first run's
stalls). Opened with the widget, the import is usually done before the first click; the GUI
thread still competes for the GIL meanwhile, but while nobody is waiting for it.
"""

from __future__ import annotations

import importlib
import logging
import threading

logger = logging.getLogger(__name__)

#: What the first job needs: torch, and the engine modules that import it.
MODULES = ("torch", "napari_tiled_unet.model.unet", "napari_tiled_unet.forward")

_started = threading.Event()  # once per process: a second widget has nothing left to import


def warm_imports() -> threading.Thread | None:
    """Start importing :data:`MODULES` in a daemon thread; None if already started."""
    if _started.is_set():
        return None
    _started.set()
    thread = threading.Thread(target=_import_all, name="napari-tiled-unet-warmup", daemon=True)
    thread.start()
    return thread


def _import_all() -> None:
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # the job that needs it reports the error properly
            logger.debug("warm-up import of %s failed", name, exc_info=True)
            return
