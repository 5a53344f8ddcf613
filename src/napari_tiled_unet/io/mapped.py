"""Keeping memory-mapped input from filling resident memory."""

from __future__ import annotations

import mmap

import numpy as np


def read_only_map(array) -> np.memmap | None:
    """The read-only memory map (e.g. ``tifffile.memmap``) behind ``array``, or None.

    ``array`` itself or, for a channel view (:class:`napari_tiled_unet.axes.AxesView`), its
    ``.array``.
    """
    base = getattr(array, "array", array)
    if isinstance(base, np.memmap) and base.mode == "r":
        return base
    return None


def release_mapped_pages(array) -> None:
    """Let go of the file pages a read-only memory map (e.g. ``tifffile.memmap``) has touched.

    Pages of a file mapping stay in the process's resident memory once read, so reading a
    memmapped image tile by tile would grow resident memory to the whole file. Dropping them
    after each batch keeps it at a batch; they are read again from the page cache if needed.
    Does nothing for other array-likes (including writable maps, whose pages may be dirty).
    """
    mapping = getattr(read_only_map(array), "_mmap", None)
    if hasattr(mapping, "madvise"):
        mapping.madvise(mmap.MADV_DONTNEED)
