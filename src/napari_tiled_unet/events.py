"""Progress events yielded by the engine generators (``iter_predict``, ``iter_train``)."""

from __future__ import annotations

import warnings
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TypeVar

R = TypeVar("R")


@dataclass(frozen=True)
class Progress:
    """One step of a long job.

    Parameters
    ----------
    stage : str
        What is running, e.g. ``"predict"`` or ``"train"``.
    done : int
        Units of work finished so far (tiles for prediction, iterations for training).
    total : int
        Units of work in the whole job, known before the first unit runs.
    message : str
        Human-readable status line.
    metrics : dict
        Numbers worth showing, e.g. ``{"loss": 0.31, "val_iou": 0.72}``.
    warning : str
        Something the user should see once, now (e.g. a tile that needs more memory than the
        budget). Consumers show it: :func:`run_to_completion` issues a UserWarning, the
        command line prints it, the napari widgets send a warning notification. Carried by
        the event rather than ``warnings.warn`` because warnings raised in a napari worker
        thread never reach the viewer.
    """

    stage: str
    done: int
    total: int
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    warning: str = ""

    @property
    def fraction(self) -> float:
        """Share of the job done, in [0, 1]."""
        return self.done / self.total if self.total else 1.0


def run_to_completion(generator: Generator[Progress, None, R]) -> R:
    """Exhaust an engine generator and return its result; events' warnings become UserWarnings."""
    while True:
        try:
            event = next(generator)
        except StopIteration as stop:
            return stop.value
        if event.warning:
            warnings.warn(event.warning, stacklevel=3)
