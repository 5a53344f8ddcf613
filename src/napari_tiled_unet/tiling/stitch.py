"""Running a tile plan: read tiles with mirror padding, compute, write each tile's valid centre.

The image and the output can be any array-like that supports basic slicing (numpy, memmap,
zarr, dask); only a few batches of tiles (the next ones read ahead, the last ones' results on
their way to ``out``) are held in memory.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.io.mapped import release_mapped_pages
from napari_tiled_unet.tiling.plan import Tile, TilePlan

TileFunction = Callable[[Any, Sequence[Tile]], Any]
PrepareFunction = Callable[[np.ndarray, Sequence[Tile]], Any]


def mirror_indices(start: int, length: int, size: int) -> np.ndarray:
    """Indices ``start .. start+length-1`` reflected into ``[0, size)``.

    Matches ``numpy.pad(mode="reflect")`` (the edge pixel is not repeated), including windows
    that reach further than the image is long.
    """
    idx = np.arange(start, start + length)
    if size == 1:
        return np.zeros_like(idx)
    period = 2 * (size - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= size, period - idx, idx)


def tile_window(tile: Tile, spatial: Sequence[int]) -> tuple[tuple[slice, ...], list[np.ndarray]]:
    """The bounding box of the pixels ``tile`` reads from an image of spatial shape ``spatial``,
    and per axis the (mirrored) indices of the tile's pixels inside that box.

    ``take_window(image[(slice(None), *box)], local)`` is the tile; :func:`read_tile` does both.
    """
    indices = [
        mirror_indices(start, length, size)
        for start, length, size in zip(tile.read_start, tile.read_shape, spatial, strict=True)
    ]
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in indices)
    local = [idx - window.start for idx, window in zip(indices, box, strict=True)]
    return box, local


def take_window(block, local: Sequence[np.ndarray]) -> np.ndarray:
    """The tile from its bounding-box block ``(C, *box)`` and :func:`tile_window`'s indices."""
    block = np.asarray(block)
    for axis, idx in enumerate(local, start=1):
        if not (idx.size == block.shape[axis] and np.array_equal(idx, np.arange(idx.size))):
            block = np.take(block, idx, axis=axis)
    return block


def read_tile(image, tile: Tile) -> np.ndarray:
    """Read one tile of ``image`` (shape ``(C, *spatial)``) with mirror padding at the borders.

    Only the bounding box of the needed pixels is read from ``image``.
    """
    box, local = tile_window(tile, image.shape[1:])
    return take_window(image[(slice(None), *box)], local)


def _read_batch(image, tiles: Sequence[Tile], prepare: PrepareFunction | None):
    batch = np.stack([read_tile(image, t) for t in tiles])
    release_mapped_pages(image)
    return batch if prepare is None else prepare(batch, tiles)


def _write_batch(out, tiles: Sequence[Tile], result, cropped: bool) -> None:
    if callable(result):
        result = result()
    for tile, tile_out in zip(tiles, result, strict=True):
        out[(Ellipsis, *tile.write)] = tile_out if cropped else tile_out[(Ellipsis, *tile.crop)]


#: Batches read ahead of the one being computed, each by its own reader thread.
READ_AHEAD = 2
#: Batches of results queued for the writer thread before the computation waits for it.
WRITE_BEHIND = 2


class _WriteBehind:
    """One writer thread storing batches into ``out``, at most :data:`WRITE_BEHIND` queued.

    :meth:`put` waits while the queue is full, and a failed write is raised there (so it
    stops the run); :meth:`drain` waits for every write; :meth:`close` drops queued writes
    but waits for one in flight, so that nothing touches ``out`` once the run is over.
    """

    def __init__(self, out, cropped: bool):
        self._out, self._cropped = out, cropped
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tile-write")
        self._writes: deque[Future] = deque()

    def put(self, tiles: Sequence[Tile], result) -> None:
        while len(self._writes) >= WRITE_BEHIND:
            self._writes.popleft().result()
        self._writes.append(
            self._thread.submit(_write_batch, self._out, tiles, result, self._cropped)
        )

    def drain(self) -> None:
        while self._writes:
            self._writes.popleft().result()

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)


def iter_run_plan(
    image,
    plan: TilePlan,
    tile_fn: TileFunction | Sequence[TileFunction],
    out,
    *,
    batch_size: int = 1,
    prepare: PrepareFunction | None = None,
    cropped: bool = False,
) -> Generator[int, None, None]:
    """Run ``tile_fn`` over the plan and write each tile's valid centre into ``out``.

    Three stages overlap, with bounded queues between them: :data:`READ_AHEAD` reader
    threads read (and mirror-pad, and ``prepare``) the next batches, the calling thread runs
    ``tile_fn`` on the current one, and a writer thread writes the results of the previous
    :data:`WRITE_BEHIND` batches. Memory stays bounded by a few batches of tiles.

    Parameters
    ----------
    image : array-like, shape (C, *spatial)
        Input; read tile by tile.
    plan : TilePlan
        From :func:`~napari_tiled_unet.tiling.plan.plan_tiles` for ``image.shape[1:]``.
    tile_fn : callable
        ``tile_fn(batch, tiles)`` with ``batch`` of shape ``(B, C, *tile_shape)`` (or what
        ``prepare`` made of it) returns an array of shape ``(B, ..., *output_tile_shape)``;
        the leading non-spatial axes after B must match ``out``'s. With ``cropped``, a
        sequence of each tile's written part, ``(..., *write_shape)``, instead. Either may
        come as a callable that returns it, which the writer thread calls (host-side
        finishing off the computing thread). A sequence of them: one worker thread each
        (e.g. one per device), sharing the batches (whichever worker is free takes the next);
        the results are the same, written as they come.
    out : array-like, shape (..., *spatial)
        Output; written tile by tile (only each tile's write region).
    batch_size : int
        Tiles per call of ``tile_fn``.
    prepare : callable, optional
        ``prepare(batch, tiles)``, run in the reader threads on each batch as read (e.g.
        normalisation, staging for a device); ``tile_fn`` receives what it returns.
    cropped : bool
        ``tile_fn`` returns the written parts only (see ``tile_fn``).

    Yields
    ------
    int
        Number of tiles done (computed; written, or queued for the writer) after each batch.
        With several workers, batches complete in any order; the count still only grows.
        All are written when the generator returns; a write error is raised from it.
        Closing the generator stops it before the next batch: reads in flight are left to
        finish on their own, a write in flight is waited for (nothing is written into
        ``out`` after the generator stops), queued ones are dropped.
    """
    if batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
    if tuple(image.shape[1:]) != plan.image_shape:
        raise UserInputError(
            f"image spatial shape {image.shape[1:]} does not match the plan {plan.image_shape}"
        )
    n_batches = -(-len(plan) // batch_size)

    def batch_tiles(b: int) -> Sequence[Tile]:  # sliced as they are needed: plans are lazy
        return plan.tiles[b * batch_size : (b + 1) * batch_size]

    if not callable(tile_fn):
        workers = list(tile_fn)
        if len(workers) > 1:
            run = _run_shared(image, batch_tiles, n_batches, workers, out, prepare, cropped)
            return (yield from run)
        tile_fn = workers[0]

    done = 0
    readers = ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="tile-read")
    writer = _WriteBehind(out, cropped)
    reads: deque[Future] = deque()
    try:
        for b in range(min(READ_AHEAD, n_batches)):
            reads.append(readers.submit(_read_batch, image, batch_tiles(b), prepare))
        for b in range(n_batches):
            tiles = batch_tiles(b)
            batch = reads.popleft().result()
            if b + READ_AHEAD < n_batches:
                ahead = batch_tiles(b + READ_AHEAD)
                reads.append(readers.submit(_read_batch, image, ahead, prepare))
            result = tile_fn(batch, tiles)
            del batch
            writer.put(tiles, result)  # bounded, and a failed write stops the run here
            del result
            done += len(tiles)
            yield done
        writer.drain()
    finally:
        # A cancel must not wait for a read in flight (a large compressed tile can take
        # seconds): the reader threads only read, so they may finish on their own. A write
        # in flight is waited for, so that nothing touches ``out`` once the run is over.
        readers.shutdown(wait=False, cancel_futures=True)
        writer.close()


def _run_shared(
    image,
    batch_tiles: Callable[[int], Sequence[Tile]],
    n_batches: int,
    workers: Sequence[TileFunction],
    out,
    prepare: PrepareFunction | None,
    cropped: bool,
) -> Generator[int, None, None]:
    """:func:`iter_run_plan` with one compute thread per worker function, sharing the batches.

    Each thread keeps its worker (its device) for the whole run; a batch is handed to the
    pool when a worker is free, so a faster device takes more batches. At most one batch
    per worker is computing, ``READ_AHEAD + len(workers) - 1`` are read ahead and
    :data:`WRITE_BEHIND` wait for the writer: memory stays bounded as with one worker.
    """
    slots = deque(range(len(workers)))
    local = threading.local()

    def claim() -> None:
        local.worker = workers[slots.popleft()]

    def compute(read: Future, tiles: Sequence[Tile]) -> Any:
        return local.worker(read.result(), tiles)

    ahead = READ_AHEAD + len(workers) - 1
    readers = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="tile-read")
    pool = ThreadPoolExecutor(len(workers), "tile-compute", initializer=claim)
    writer = _WriteBehind(out, cropped)
    reads: deque[Future] = deque()
    computing: dict[Future, Sequence[Tile]] = {}
    done = next_batch = 0
    try:
        for b in range(min(ahead, n_batches)):
            reads.append(readers.submit(_read_batch, image, batch_tiles(b), prepare))
        while next_batch < n_batches or computing:
            while next_batch < n_batches and len(computing) < len(workers):
                tiles = batch_tiles(next_batch)
                computing[pool.submit(compute, reads.popleft(), tiles)] = tiles
                if next_batch + ahead < n_batches:
                    later = batch_tiles(next_batch + ahead)
                    reads.append(readers.submit(_read_batch, image, later, prepare))
                next_batch += 1
            finished, _ = wait(computing, return_when=FIRST_COMPLETED)
            for future in finished:
                tiles = computing.pop(future)
                result = future.result()
                writer.put(tiles, result)
                del result
                done += len(tiles)
                yield done
        writer.drain()
    finally:
        # as iter_run_plan; a forward in flight is waited for, so that no worker still uses
        # its network (or device) once the run is over
        readers.shutdown(wait=False, cancel_futures=True)
        pool.shutdown(wait=True, cancel_futures=True)
        writer.close()
