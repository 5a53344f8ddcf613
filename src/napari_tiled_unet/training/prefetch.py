"""Training batches, drawn between steps or prepared ahead in one background thread.

Preparing the next batch while the current step runs hides the data pipeline (tile reading,
augmentation, targets, weight maps) behind the step — when a core is free for it. On a CPU whose
cores all run torch's intra-op threads there is none: the thread then competes with them, and
an intra-op parallel region waits for its slowest thread, so each slice the data thread takes
stalls the whole step (measured in ``benchmarks/results/train_throughput.md``). "auto" therefore
prepares ahead on an accelerator, or on a CPU with more cores than torch's threads, and draws
between steps otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

import torch

#: What ``TrainConfig.prefetch`` accepts.
PREFETCH_CHOICES = ("auto", True, False)

B = TypeVar("B")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def prefetch_ahead(setting: bool | str, device: torch.device) -> bool:
    """Whether batches are prepared ahead in a background thread.

    Parameters
    ----------
    setting : {"auto", True, False}
        ``TrainConfig.prefetch``: "auto" decides as the module says, True or False force it.
    device : torch.device
        Where the step runs.
    """
    if setting != "auto":
        return bool(setting)
    if device.type != "cpu":
        return True
    return available_cores() > torch.get_num_threads()


class BatchSource(Generic[B]):
    """The batches of a run, one per :meth:`next`, drawn in order by one callable.

    Parameters
    ----------
    draw : callable
        Makes one batch. With ``ahead`` it runs in a background thread, one call at a time, so
        a random generator it uses is still drawn from in order (same batches either way).
    ahead : bool
        Prepare the next batch while the caller works on this one.
    limit : int or None
        Batches wanted in all (none is prepared beyond it); None: no limit.

    Notes
    -----
    :meth:`close` (also on ``with`` exit) waits for a batch in preparation and drops it; call it
    in a ``finally`` so that a stopped run leaves no thread behind.
    """

    def __init__(self, draw: Callable[[], B], *, ahead: bool, limit: int | None = None):
        self._draw = draw
        self._left = limit
        self._executor = ThreadPoolExecutor(1, "tile-sampler") if ahead else None
        self._pending: Future[B] | None = None
        self._submit()

    @property
    def ahead(self) -> bool:
        """Whether batches are prepared in a background thread."""
        return self._executor is not None

    def _take(self) -> bool:
        if self._left is None:
            return True
        if self._left <= 0:
            return False
        self._left -= 1
        return True

    def _submit(self) -> None:
        if self._executor is not None and self._take():
            self._pending = self._executor.submit(self._draw)

    def next(self) -> B:
        """The next batch (waits for it when it is being prepared).

        Raises
        ------
        StopIteration
            Past ``limit``.
        """
        if self._executor is None:
            if not self._take():
                raise StopIteration
            return self._draw()
        if self._pending is None:
            raise StopIteration
        batch = self._pending.result()
        self._pending = None
        self._submit()
        return batch

    def close(self) -> None:
        """Stop preparing: wait for a batch in preparation and shut the thread down."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._pending = None

    def __enter__(self) -> BatchSource[B]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
