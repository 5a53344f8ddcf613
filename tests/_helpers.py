"""Helpers shared by the tests (import as ``from _helpers import drain``, like ``_nets``)."""

from collections.abc import Generator
from typing import Any, TypeVar

E = TypeVar("E")
R = TypeVar("R")


def drain(generator: Generator[E, Any, R]) -> tuple[list[E], R]:
    """Run an engine generator to its end: ``(events, result)``.

    ``events`` are the items it yielded (Progress events for the engines), in order; ``result``
    is its return value. Unlike ``run_to_completion``, events' warnings stay on the events
    (``Progress.warning``) for the test to read; nothing is turned into a UserWarning.
    """
    events: list[E] = []
    while True:
        try:
            events.append(next(generator))
        except StopIteration as stop:
            return events, stop.value
