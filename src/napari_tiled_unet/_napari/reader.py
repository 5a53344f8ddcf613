"""napari reader: open TIFF files as lazy Image layers (memmap or zarr, never read whole)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_tiled_unet.io.pyramid import strided_levels
from napari_tiled_unet.io.tiff import open_tiff, tiff_axes, tiff_levels

SUFFIXES = (".tif", ".tiff")
#: Memory-mapped images with at least this many pixels per plane open as multiscale layers.
MULTISCALE_PIXELS = 8192 * 8192


def get_reader(path):
    """Return :func:`read_tiff` for a single ``.tif``/``.tiff`` path, else None."""
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    if not str(path).lower().endswith(SUFFIXES):
        return None
    return read_tiff


def read_tiff(path):
    """Layer data for a TIFF: level 0 lazily, or every pyramid level as a multiscale image.

    A large uncompressed (memory-mapped) image without a pyramid gets strided views as its
    levels. A large tiled/compressed one without a pyramid stays single-scale, and napari
    decodes the whole plane to show it: write such files as pyramidal (OME-)TIFFs.

    Returns
    -------
    list of (data, metadata, "image")
        ``data`` is a ``numpy.memmap`` or ``zarr.Array`` (a list of them for pyramids).
    """
    if isinstance(path, list | tuple):
        path = path[0]
    levels = tiff_levels(path)
    meta = {"name": Path(path).stem}
    if levels > 1:
        data = [open_tiff(path, level=i) for i in range(levels)]
        meta["multiscale"] = True
    else:
        data = open_tiff(path)
        axes = tiff_axes(path)
        if isinstance(data, np.memmap) and "Y" in axes and "X" in axes:
            yx = (axes.index("Y"), axes.index("X"))
            if data.shape[yx[0]] * data.shape[yx[1]] >= MULTISCALE_PIXELS:
                # Strided views of the memmap as levels: napari reads only what it shows
                # instead of the whole plane (7 s and 4 GiB for a 2 GiB image).
                data = strided_levels(data, yx)
                meta["multiscale"] = True
    return [(data, meta, "image")]
