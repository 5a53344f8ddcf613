"""napari reader: open TIFF files as lazy Image layers (memmap or zarr, never read whole).

:func:`get_reader` claims only regular files that start like a TIFF (it never opens a FIFO or
a device, which could block the viewer); :func:`read_tiff` raises one
:class:`~napari_tiled_unet.errors.UserInputError` naming the file for a damaged one it claimed
(see :func:`~napari_tiled_unet.io.tiff.open_tiff`), which napari shows as a notification.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import numpy as np

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.io.pyramid import strided_levels
from napari_tiled_unet.io.tiff import open_tiff, tiff_axes, tiff_levels

SUFFIXES = (".tif", ".tiff")
#: Memory-mapped images with at least this many pixels per plane open as multiscale layers.
MULTISCALE_PIXELS = 8192 * 8192
#: The first bytes of a TIFF: little- or big-endian, classic or BigTIFF.
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Share of the machine's memory one decoded plane of a single-scale compressed or tiled image
#: may take: napari decodes the whole plane to show it.
PLANE_MEMORY_SHARE = 0.5


def _starts_like_tiff(path: str) -> bool:
    """Whether ``path`` is a regular file beginning with a TIFF header (never opens a FIFO)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as f:
            return f.read(4) in TIFF_MAGIC
    except OSError:
        return False


def get_reader(path):
    """Return :func:`read_tiff` for a single ``.tif``/``.tiff`` file that starts like a TIFF,
    else None (other readers may try it)."""
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    path = os.fspath(path)
    if not path.lower().endswith(SUFFIXES) or not _starts_like_tiff(path):
        return None
    return read_tiff


def _memory_bytes() -> int:
    """Physical memory of this machine (16 GiB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def _check_plane(path, data, axes: str) -> None:
    """Refuse a decoded (zarr) image whose YX plane would not fit in memory when shown."""
    if isinstance(data, np.ndarray) or "Y" not in axes or "X" not in axes:
        return
    plane = [data.shape[axes.index(a)] for a in "YXS" if a in axes]
    need = math.prod(plane) * data.dtype.itemsize
    have = _memory_bytes()
    if need > PLANE_MEMORY_SHARE * have:
        raise UserInputError(
            f"{path}: one plane of this compressed or tiled image decodes to "
            f"{need / 2**30:.1f} GiB, and napari decodes a whole plane to show it (this "
            f"machine has {have / 2**30:.1f} GiB); save it as a pyramidal (OME-)TIFF, or "
            "predict it from the command line"
        )


def read_tiff(path):
    """Layer data for a TIFF: level 0 lazily, or every pyramid level as a multiscale image.

    A large uncompressed (memory-mapped) image without a pyramid gets strided views as its
    levels. A large tiled/compressed one without a pyramid stays single-scale, and napari
    decodes the whole plane to show it: write such files as pyramidal (OME-)TIFFs (a plane
    that would take more than half the machine's memory is refused).

    Returns
    -------
    list of (data, metadata, "image")
        ``data`` is a ``numpy.memmap`` or ``zarr.Array`` (a list of them for pyramids).

    Raises
    ------
    UserInputError
        (a ValueError) For a file that is damaged, not a regular file, or claims more pixels
        than it could hold; the message names the file.
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
        _check_plane(path, data, axes)
        if isinstance(data, np.memmap) and "Y" in axes and "X" in axes:
            yx = (axes.index("Y"), axes.index("X"))
            if data.shape[yx[0]] * data.shape[yx[1]] >= MULTISCALE_PIXELS:
                # Strided views of the memmap as levels: napari reads only what it shows
                # instead of the whole plane (7 s and 4 GiB for a 2 GiB image).
                data = strided_levels(data, yx)
                meta["multiscale"] = True
    return [(data, meta, "image")]
