"""Helpers shared by the tests (import as ``from _helpers import drain``, like ``_nets``)."""

import contextlib
from collections.abc import Generator, Iterator
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


class RunningCommand:
    """A command-line run in a subprocess whose stderr (tqdm progress) is read as it comes."""

    def __init__(self, proc):
        import threading

        self.proc = proc
        self.chunks: list[bytes] = []
        self.working = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def tiles_done(self) -> int:
        """The largest "done" count the progress bar has shown: "predict:  0%| | 17/8836 [..."."""
        import re

        found = re.findall(rb"(\d+)/\d+ \[", b"".join(self.chunks))
        return max(map(int, found), default=0)

    def stderr(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def _read(self) -> None:
        import os

        for chunk in iter(lambda: os.read(self.proc.stderr.fileno(), 4096), b""):
            self.chunks.append(chunk)
            if self.tiles_done() > 0:
                self.working.set()
        self.working.set()  # stderr closed: the run is over, stop waiting


@contextlib.contextmanager
def running_command(cmd: list[str], **popen: Any) -> Iterator[RunningCommand]:
    """Start ``cmd`` and wait (on its progress output, up to 120 s) until tiles are written.

    The run is killed on exit if it is still alive, and its stderr read to the end.
    """
    import subprocess

    run = RunningCommand(subprocess.Popen(cmd, stderr=subprocess.PIPE, **popen))
    try:
        run.working.wait(timeout=120)
        yield run
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
        run.reader.join(timeout=60)


def tiny_train_settings(widget: Any, iterations: int = 10, label_mode: str = "instance") -> None:
    """Set a Train widget to a tiny CPU network and small tiles, without augmentation."""
    widget.label_mode.value = label_mode
    widget.base_channels.value = 4
    widget.depth.value = 2
    widget.tile_size.value = 32
    widget.batch_size.value = 2
    widget.iterations.value = iterations
    widget.augmentation.value = False
    widget.device.value = "cpu"
