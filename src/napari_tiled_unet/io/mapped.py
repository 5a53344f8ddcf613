"""Keeping memory-mapped input from filling resident memory."""

from __future__ import annotations

import mmap

import numpy as np


def release_mapped_pages(array) -> None:
    """Let go of the file pages a read-only memory map (e.g. ``tifffile.memmap``) has touched.

    Pages of a file mapping stay in the process's resident memory once read, so reading a
    memmapped image tile by tile would grow resident memory to the whole file. Dropping them
    after each batch keeps it at a batch; they are read again from the page cache if needed.
    Does nothing for other array-likes (including writable maps, whose pages may be dirty).
    """
    base = getattr(array, "array", array)  # a channel view wraps the memmap
    mapping = getattr(base, "_mmap", None)
    if isinstance(base, np.memmap) and hasattr(mapping, "madvise") and base.mode == "r":
        mapping.madvise(mmap.MADV_DONTNEED)
