"""Progress events yielded by the engine generators (``iter_predict``, ``iter_train``)."""

from __future__ import annotations

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
    """

    stage: str
    done: int
    total: int
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Share of the job done, in [0, 1]."""
        return self.done / self.total if self.total else 1.0


def run_to_completion(generator: Generator[Progress, None, R]) -> R:
    """Exhaust an engine generator and return its result."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value
