"""Multiscale levels for images larger than the screen, so a viewer reads only what it shows.

A viewer given one huge array reads the whole plane to draw it zoomed out (napari does, and
copies it into textures); given a pyramid it reads the visible part of a level no finer than
the screen. Levels halve Y and X by taking every other pixel (nearest neighbour), which is what
label images need (no invented ids) and good enough for looking at raw images.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np

from napari_tiled_unet.events import Progress
from napari_tiled_unet.tiling.grid import BlockGrid

#: Levels are added until Y and X are at most this many pixels.
COARSEST_EDGE = 1024


def level_shapes(
    shape: Sequence[int], yx: tuple[int, int] = (-2, -1), coarsest: int | None = None
) -> list[tuple[int, ...]]:
    """Shapes of the pyramid of an array of ``shape``: Y and X (axes ``yx``) halved per level
    until both are at most ``coarsest`` pixels (default :data:`COARSEST_EDGE`)."""
    coarsest = COARSEST_EDGE if coarsest is None else coarsest
    shapes = [tuple(int(n) for n in shape)]
    while max(shapes[-1][a] for a in yx) > coarsest:
        new = list(shapes[-1])
        for a in yx:
            new[a] = -(-new[a] // 2)
        shapes.append(tuple(new))
    return shapes


def strided_levels(array, yx: tuple[int, int] = (-2, -1), coarsest: int | None = None) -> list:
    """Lazy pyramid of a numpy-like array as strided views (a memmap's levels cost nothing).

    Level ``k`` is every ``2**k``-th pixel along Y and X. Only for arrays whose strided reads
    touch just the pixels they return (numpy, memmap); chunked stores decode whole chunks.
    """
    levels = []
    for k in range(len(level_shapes(array.shape, yx, coarsest))):
        key = [slice(None)] * array.ndim
        for a in yx:
            key[a] = slice(None, None, 2**k)
        levels.append(array[tuple(key)])
    return levels


def iter_write_pyramid(
    level0,
    directory: str | os.PathLike,
    *,
    coarsest: int | None = None,
    block: int = 2048,
    chunk: int = 256,
) -> Generator[Progress, None, list]:
    """Write the coarser levels of ``level0`` (Y, X last) as zarr arrays in ``directory``.

    Each level is made from the one before, ``block`` × ``block`` output pixels at a time, so
    memory stays at a few blocks and the work is about 1.3 reads of ``level0``. Yields Progress
    (stage "pyramid", in blocks); returns ``[level0, level1, ...]``.
    """
    import zarr

    shapes = level_shapes(level0.shape, coarsest=coarsest)
    lead = level0.ndim - 2

    def windows(shape) -> BlockGrid:
        """``block`` x ``block`` output pixels of one plane at a time."""
        return BlockGrid(shape, (*(1,) * lead, block, block))

    total = sum(len(windows(shape)) for shape in shapes[1:])
    yield Progress("pyramid", 0, total, f"{len(shapes) - 1} coarser levels")
    directory = Path(directory)
    if len(shapes) > 1:
        directory.mkdir(parents=True, exist_ok=True)
    levels, done = [level0], 0
    for k, shape in enumerate(shapes[1:], start=1):
        previous = levels[-1]
        level = zarr.create_array(
            store=str(directory / f"level{k}.zarr"),
            shape=shape,
            dtype=previous.dtype,
            chunks=(*(1,) * lead, min(chunk, shape[-2]), min(chunk, shape[-1])),
            fill_value=0,
            overwrite=True,
        )
        for window in windows(shape):
            *index, y, x = window
            source = np.asarray(
                previous[(*index, slice(2 * y.start, 2 * y.stop), slice(2 * x.start, 2 * x.stop))]
            )
            level[window] = source[..., ::2, ::2]
            done += 1
            yield Progress("pyramid", done, total, f"level {k}: block {done}/{total}")
        levels.append(level)
    return levels
