"""Results made ready for the viewer in the worker thread, so that adding them does not stall it.

napari converts a Labels layer's data for display on the GUI thread when the layer is added:
an ``int32`` label image of 10 Mpx costs it seconds, the same ids as ``uint16`` a tenth of that;
and a plane larger than the screen is converted whole unless it comes as a pyramid. Both
conversions are done here, in the worker, before the result reaches the GUI thread
(``benchmarks/gui_stall.py`` measures the effect).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any

import numpy as np

from napari_tiled_unet.events import Progress
from napari_tiled_unet.io.pyramid import strided_levels
from napari_tiled_unet.jobs import PredictResult

MULTISCALE_PLANE_PIXELS = 4096 * 4096
"""In-memory results whose Y x X plane has at least this many pixels come as a pyramid
(napari cannot paint those; smaller results stay editable)."""


def smallest_label_dtype(labels: np.ndarray) -> np.ndarray:
    """``labels`` (non-negative integer ids) in ``uint8`` or ``uint16`` if the ids fit, else as is."""
    if labels.dtype.kind not in "iu" or labels.size == 0 or labels.dtype.itemsize <= 1:
        return labels
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        return labels
    for dtype in (np.uint8, np.uint16):
        if high <= np.iinfo(dtype).max:
            return (
                labels
                if labels.dtype.itemsize <= np.dtype(dtype).itemsize
                else labels.astype(dtype)
            )
    return labels


def contiguous_pyramid(array: np.ndarray) -> list[np.ndarray]:
    """``array`` and its coarser levels (every other pixel in Y and X), each level a copy."""
    levels = strided_levels(array)
    return [array, *(np.ascontiguousarray(level) for level in levels[1:])]


def for_viewer(
    job: PredictResult, multiscale_pixels: int = MULTISCALE_PLANE_PIXELS
) -> PredictResult:
    """``job`` with its in-memory result in the smallest label dtype and, for a plane of at
    least ``multiscale_pixels``, as a pyramid. Results on disk and pyramids pass unchanged."""
    data: Any = job.data
    if type(data) is not np.ndarray:  # a store on disk or a pyramid already
        return job
    if job.output != "probabilities":
        data = smallest_label_dtype(data)
    if data.ndim >= 2 and data.shape[-2] * data.shape[-1] >= multiscale_pixels:
        data = contiguous_pyramid(data)
    return dataclasses.replace(job, data=data)


def iter_for_viewer(
    job: Generator[Progress, None, PredictResult], multiscale_pixels: int
) -> Generator[Progress, None, PredictResult]:
    """Run a prediction job, then :func:`for_viewer` its result (in the same worker thread)."""
    result = yield from job
    return for_viewer(result, multiscale_pixels)
