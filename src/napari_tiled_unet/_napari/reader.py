"""napari reader: open TIFF files as lazy Image layers (memmap or zarr, never read whole)."""

from __future__ import annotations

from pathlib import Path

from napari_tiled_unet.io.tiff import open_tiff, tiff_levels

SUFFIXES = (".tif", ".tiff")


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
    return [(data, meta, "image")]
