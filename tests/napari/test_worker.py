"""The worker helper: progress from the engine's events, results only when the engine finished."""

from __future__ import annotations

import threading
import time

from napari.utils import progress

from napari_tiled_unet._napari._worker import start_engine
from napari_tiled_unet.events import Progress


def engine(total, gate=None, log=None, pace=0.0):
    try:
        for done in range(total + 1):
            time.sleep(pace)
            yield Progress("test", done, total, f"{done}/{total}")
        if gate is not None:
            gate.wait(30)
        return "result"
    finally:
        if log is not None:
            log.append("cleaned up")


def run(qtbot, *args, slow_callback=0.0, **kwargs):
    calls = {"result": [], "progress": [], "error": [], "finished": 0}

    def progressed(event):
        calls["progress"].append(event)
        time.sleep(slow_callback)

    def finished():
        calls["finished"] += 1

    worker = start_engine(
        engine,
        *args,
        on_result=calls["result"].append,
        on_progress=progressed,
        on_error=calls["error"].append,
        on_finished=finished,
        description="test job",
        **kwargs,
    )
    return worker, calls


def test_result_progress_and_bar(qtbot, viewer):
    """With a viewer, napari's progress widgets process events re-entrantly: order must hold."""
    before = set(progress._all_instances)
    _worker, calls = run(qtbot, 50, pace=0.005, slow_callback=0.01)
    qtbot.waitUntil(lambda: calls["finished"] == 1, timeout=10_000)
    assert calls["result"] == ["result"]
    assert [e.done for e in calls["progress"]] == list(range(51))
    assert calls["error"] == []
    assert set(progress._all_instances) == before, "the progress bar must be closed"


def test_quit_after_the_engine_returned_gives_no_result(qtbot):
    """Cancel wins even if it comes after the last yield: on_result is never called."""
    gate, log = threading.Event(), []
    worker, calls = run(qtbot, 2, gate=gate, log=log)
    qtbot.waitUntil(lambda: len(calls["progress"]) == 3, timeout=10_000)
    worker.quit()
    gate.set()
    qtbot.waitUntil(lambda: calls["finished"] == 1, timeout=10_000)
    assert calls["result"] == []
    assert log == ["cleaned up"]


def test_quit_runs_the_engine_cleanup_at_once(qtbot):
    gate, log = threading.Event(), []

    def stalled():
        try:
            yield Progress("test", 0, 3)
            gate.wait(30)
            yield Progress("test", 1, 3)
            yield Progress("test", 2, 3)
            return "never"
        finally:
            log.append("cleaned up")

    results, events, finished = [], [], []
    worker = start_engine(
        stalled,
        on_result=results.append,
        on_progress=events.append,
        on_finished=lambda: finished.append(1),
        description="t",
    )
    qtbot.waitUntil(lambda: bool(events), timeout=10_000)
    worker.quit()
    gate.set()
    qtbot.waitUntil(lambda: bool(finished), timeout=10_000)
    assert results == []
    assert log == ["cleaned up"], "the engine's finally block must run when the worker stops"
    assert len(events) <= 2, "the engine must stop at the next yield"


def test_errors_become_notifications(qtbot, errors):
    def failing():
        yield Progress("test", 0, 1)
        raise ValueError("layer 'x' is broken; fix it like this")

    seen, finished = [], []
    start_engine(
        failing,
        on_result=seen.append,
        on_error=seen.append,
        on_finished=lambda: finished.append(1),
        description="t",
    )
    qtbot.waitUntil(lambda: bool(finished), timeout=10_000)
    assert errors == ["layer 'x' is broken; fix it like this"]
    assert len(seen) == 1 and isinstance(seen[0], ValueError)
