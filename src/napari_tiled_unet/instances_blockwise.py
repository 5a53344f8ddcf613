"""Instance labels from a class map far larger than memory, block by block.

:func:`iter_instances_blockwise` gives exactly
:func:`~napari_tiled_unet.postprocess.instances_from_classes` (the "components" method of
:func:`~napari_tiled_unet.postprocess.labels_from_probabilities`), reading the class map
(numpy, memmap or zarr) and writing the object ids (zarr or numpy) one block at a time.

Four passes over the blocks:

1. **Components.** Each block's interior pixels (seeds) and foreground pixels are labelled
   with ``scipy.ndimage.label`` (face connectivity). Labels that touch across a block face
   are joined (union-find over the face pixel pairs, ``scipy.sparse.csgraph``); the global
   components give each seed its size and first pixel (C order), so seeds below ``min_size``
   are dropped and the others numbered 1..S in raster order of their first pixel (the tie
   rule), and each foreground component learns whether it holds a seed.
2. **Seeds.** Each block's seed numbers are written into ``out``.
3. **Growth.** Each block, read with a ``halo`` of pixels around it (class map and the seeds
   in ``out``), grows the seeds by :func:`~napari_tiled_unet.postprocess.grow_seeds` for at
   most ``halo`` layers and writes its own pixels. A pixel at geodesic distance ``d <= halo``
   from its nearest seed gets exactly the whole-image label: every path of length ``d``
   from it, and every tie it depends on, stays within ``d`` pixels of it, inside the
   halo. Foreground left unreached in a seedless component is a leftover object
   (numbered by its global component). Foreground left unreached in a component with a
   seed is farther than ``halo`` from every seed: these pixels, and the pixels at distance
   exactly ``halo`` beside them, are collected, and the search continues over them in
   memory after the pass, so the result stays exact. Class maps of a network rarely have
   any: seeds are object interiors and the boundary class a ring a few pixels wide (on the
   bundled model's class map of the nuclei sample the farthest pixel is 11 px from its seed).
4. **Numbering.** Objects below ``min_object_size`` pixels (sizes summed in pass 3) become
   background; the others' provisional ids become 1..N in order of first appearance (C order).

Memory: a few arrays the size of one block with its halo (measured peaks: about 40 MB for
the default 1024 x 1024 block, 190 MB for the default 64 x 256 x 256 one), plus a few numbers
per connected component (interior and foreground, counted once per block they touch), plus
the block faces not yet joined (two int32 labels per pixel of one image row in 2D, of one
image plane in 3D), plus the pixels farther than ``halo`` from their seed, if any. Never the
whole image.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.events import Progress
from napari_tiled_unet.postprocess import first_pixels, grow_seeds, smallest_label_per_pixel
from napari_tiled_unet.tiling.grid import BlockGrid

STAGE = "instances"
DEFAULT_BLOCK = {2: (1024, 1024), 3: (64, 256, 256)}
"""Default block shapes (pixels), by number of spatial axes."""
DEFAULT_HALO = 16
"""Default halo (pixels): growth beyond it is finished in memory, still exactly."""


def _block_shape(
    block: int | Sequence[int] | None, shape: tuple[int, ...], chunks: Sequence[int] | None = None
) -> tuple[int, ...]:
    """The block shape to use; the default is rounded up to whole chunks of ``out``."""
    ndim = len(shape)
    if block is None:
        block = DEFAULT_BLOCK.get(ndim, (1024,) * ndim)
        if chunks is not None and len(chunks) == ndim:
            block = tuple(
                -(-b // max(int(c), 1)) * max(int(c), 1) for b, c in zip(block, chunks, strict=True)
            )
    if isinstance(block, int | np.integer):
        block = (int(block),) * ndim
    block = tuple(int(b) for b in block)
    if len(block) != ndim or min(block) < 1:
        raise UserInputError(f"block must be a positive int or {ndim} positive ints, got {block}")
    return tuple(min(b, max(n, 1)) for b, n in zip(block, shape, strict=True))


def _global_flat(local_flat: np.ndarray, block_shape, origin, shape) -> np.ndarray:
    """Flat C-order indices in the image of flat indices inside a block at ``origin``."""
    coords = np.unravel_index(local_flat, block_shape)
    return np.ravel_multi_index(
        tuple(c + o for c, o in zip(coords, origin, strict=True)), shape
    ).astype(np.int64)


def _join(n_nodes: int, pairs: list[np.ndarray]) -> tuple[int, np.ndarray]:
    """Connected components of ``n_nodes`` nodes joined by the (a, b) rows of ``pairs``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n_nodes == 0:
        return 0, np.zeros(0, np.int64)
    edges = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    graph = coo_matrix(
        (np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes)
    )
    return connected_components(graph, directed=False)


def _face_pairs(before: np.ndarray, after: np.ndarray, off_before: int, off_after: int):
    """Unique (node, node) pairs of labels facing each other across a block face."""
    both = (before > 0) & (after > 0)
    if not both.any():
        return None
    a = before[both].astype(np.int64) + (off_before - 1)
    b = after[both].astype(np.int64) + (off_after - 1)
    return np.unique(np.stack([a, b], axis=1), axis=0)


def _min_at(table: np.ndarray, ids: np.ndarray, values: np.ndarray) -> None:
    np.minimum.at(table, ids, values)


def iter_instances_blockwise(
    classes,
    out,
    *,
    block: int | Sequence[int] | None = None,
    min_size: int = 4,
    halo: int = DEFAULT_HALO,
    min_object_size: int = 0,
) -> Generator[Progress, None, Any]:
    """Object ids from a class map, block by block; yields progress, returns ``out``.

    The result equals :func:`~napari_tiled_unet.postprocess.instances_from_classes`
    ``(classes[...], min_size, min_object_size)`` exactly, ties included, for class maps
    of any size.

    Parameters
    ----------
    classes : array-like of int, shape (*spatial)
        0 background, 1 interior, 2 boundary (the arg-max class map of an instance-trained
        network, e.g. ``iter_predict(..., output="labels")``); numpy, memmap, zarr or any
        array with numpy-style slicing, read one block (with its halo) at a time.
    out : array-like, shape (*spatial)
        Receives the object ids (written block by block; it also holds intermediate values
        while the generator runs). A signed integer dtype of at least 32 bits, such as the
        int32 zarr array of :func:`~napari_tiled_unet.io.store.create_output`.
    block : int or sequence of int, optional
        Block shape in pixels (an int: the same along every axis). Default 1024 x 1024 in 2D,
        64 x 256 x 256 in 3D, rounded up to whole chunks of ``out`` (if it has ``chunks``);
        choose multiples of the chunks of ``out`` and ``classes``.
    min_size : int
        Seeds and seedless foreground regions smaller than this many pixels are dropped.
    halo : int
        Pixels read around each block for the growth step. Pixels farther than this from
        their nearest seed are finished in memory after the pass (still exact); a larger
        halo avoids that at the cost of reading more.
    min_object_size : int
        Objects smaller than this many pixels after growth are removed; 0: none.

    Yields
    ------
    Progress
        ``stage="instances"``, ``done``/``total`` in block steps (4 passes over the blocks).

    Returns
    -------
    array-like
        ``out``.
    """
    shape = tuple(int(n) for n in classes.shape)
    if tuple(out.shape) != shape:
        raise UserInputError(f"out has shape {tuple(out.shape)}; expected {shape} like classes")
    out_dtype = np.dtype(out.dtype)
    if out_dtype.kind != "i" or out_dtype.itemsize < 4:
        raise UserInputError(
            f"out must have a signed integer dtype of 32 bits or more, got {out_dtype}"
        )
    if halo < 1:
        raise UserInputError(f"halo must be at least 1, got {halo}")
    if len(shape) == 0 or min(shape) == 0:
        return out
    grid = BlockGrid(shape, _block_shape(block, shape, getattr(out, "chunks", None)))
    indices = list(grid.indices())
    ndim = len(shape)
    structure = ndi.generate_binary_structure(ndim, 1)
    total = 4 * len(grid)
    done = 0
    yield Progress(STAGE, 0, total, f"{len(grid)} blocks of {grid.block}")

    def read(region) -> np.ndarray:
        return np.asarray(classes[region])

    # Pass 1: components per block, joined across faces.
    seed_offsets, fg_offsets = [], []
    n_seed = n_fg = 0
    seed_size, seed_first, seed_fg, fg_size = [], [], [], []
    seed_pairs, fg_pairs = [], []
    pending: dict[tuple[tuple[int, ...], int], tuple[np.ndarray, int, np.ndarray, int]] = {}
    for index, core in zip(indices, grid, strict=True):
        c = read(core)
        seeds, ns = ndi.label(c == 1, structure=structure)
        fg, nf = ndi.label(c != 0, structure=structure)
        seed_offsets.append(n_seed)
        fg_offsets.append(n_fg)
        if ns:
            seed_size.append(np.bincount(seeds.ravel(), minlength=ns + 1)[1:])
            ids, first = first_pixels(seeds)
            origin = tuple(s.start for s in core)
            seed_first.append(_global_flat(first, c.shape, origin, shape))
            seed_fg.append(fg.ravel()[first].astype(np.int64) + (n_fg - 1))
        if nf:
            fg_size.append(np.bincount(fg.ravel(), minlength=nf + 1)[1:])
        for axis in range(ndim):
            if index[axis] > 0:
                before_s, off_s, before_f, off_f = pending.pop((index, axis))
                first_slab = (slice(None),) * axis + (0,)
                pairs = _face_pairs(before_s, seeds[first_slab], off_s, n_seed)
                if pairs is not None:
                    seed_pairs.append(pairs)
                pairs = _face_pairs(before_f, fg[first_slab], off_f, n_fg)
                if pairs is not None:
                    fg_pairs.append(pairs)
            if index[axis] + 1 < grid.counts[axis]:
                last_slab = (slice(None),) * axis + (-1,)
                after = tuple(i + (a == axis) for a, i in enumerate(index))
                pending[(after, axis)] = (
                    seeds[last_slab].copy(),
                    n_seed,
                    fg[last_slab].copy(),
                    n_fg,
                )
        n_seed += ns
        n_fg += nf
        done += 1
        yield Progress(STAGE, done, total, f"components: block {done}/{len(grid)}")
    del pending

    # Global seeds: sizes, first pixels, numbers 1..S in raster order of the first pixel.
    _, seed_comp = _join(n_seed, seed_pairs)
    n_seed_comps = int(seed_comp.max(initial=-1)) + 1
    sizes = np.zeros(n_seed_comps, np.int64)
    firsts = np.full(n_seed_comps, np.iinfo(np.int64).max, np.int64)
    if n_seed:
        np.add.at(sizes, seed_comp, np.concatenate(seed_size))
        _min_at(firsts, seed_comp, np.concatenate(seed_first))
    kept = np.flatnonzero(sizes >= max(min_size, 1))
    kept = kept[np.argsort(firsts[kept], kind="stable")]
    n_objects_seeded = kept.size
    number = np.zeros(n_seed_comps, np.int64)
    number[kept] = np.arange(1, kept.size + 1)
    seed_number = (number[seed_comp] if n_seed else np.zeros(0, np.int64)).astype(np.int32)
    del sizes, firsts, number, seed_size, seed_first, seed_pairs

    # Global foreground components: holds a kept seed (-1: grown into), else a leftover
    # object (provisional id after the seeds) or dropped (0).
    _, fg_comp = _join(n_fg, fg_pairs)
    n_fg_comps = int(fg_comp.max(initial=-1)) + 1
    fg_sizes = np.zeros(n_fg_comps, np.int64)
    if n_fg:
        np.add.at(fg_sizes, fg_comp, np.concatenate(fg_size))
    seeded = np.zeros(n_fg_comps, bool)
    if n_seed:
        seeded[fg_comp[np.concatenate(seed_fg)[seed_number > 0]]] = True
    leftover = np.flatnonzero(~seeded & (fg_sizes >= max(min_size, 1)))
    fg_value = np.zeros(n_fg_comps, np.int64)
    fg_value[seeded] = -1
    fg_value[leftover] = n_objects_seeded + 1 + np.arange(leftover.size)
    fg_node_value = (fg_value[fg_comp] if n_fg else np.zeros(0, np.int64)).astype(np.int32)
    n_provisional = n_objects_seeded + leftover.size
    if n_provisional >= np.iinfo(np.int32).max:
        raise ValueError(f"too many objects ({n_provisional}) for int32 ids")
    del fg_sizes, seeded, fg_value, fg_comp, fg_size, seed_fg, fg_pairs, seed_comp

    def lookup(values: np.ndarray, offset: int, count: int) -> np.ndarray:
        return np.concatenate([np.zeros(1, values.dtype), values[offset : offset + count]])

    # Pass 2: seed numbers into out.
    seed_counts = np.diff([*seed_offsets, n_seed])
    for b, core in enumerate(grid):
        seeds, ns = ndi.label(read(core) == 1, structure=structure)
        if ns != seed_counts[b]:
            raise RuntimeError("classes changed while the instances were computed")
        out[core] = lookup(seed_number, seed_offsets[b], ns)[seeds].astype(out_dtype)
        done += 1
        yield Progress(STAGE, done, total, f"seeds: block {b + 1}/{len(grid)}")

    # Pass 3: growth with a halo. Seeds stay positive in out, grown pixels are written
    # negative (so later blocks still see the seeds in their halo), far pixels 0 for now.
    fg_counts = np.diff([*fg_offsets, n_fg])
    first_seen = np.full(n_provisional + 1, np.iinfo(np.int64).max, np.int64)
    object_size = np.zeros(n_provisional + 1, np.int64)
    far, rim, rim_labels = [], [], []
    for b, (index, core) in enumerate(zip(indices, grid, strict=True)):
        window, inner = grid.window(index, halo)
        c = read(window)
        o = np.asarray(out[window])
        seeds = np.where(o > 0, o, 0).astype(np.int32)
        labels, last = grow_seeds(seeds, c != 0, max_steps=halo)
        labels = labels[inner]
        c_core = c[inner]
        unreached = (c_core != 0) & (labels == 0)
        origin = tuple(s.start for s in core)
        if unreached.any():
            fg, nf = ndi.label(c_core != 0, structure=structure)
            if nf != fg_counts[b]:
                raise RuntimeError("classes changed while the instances were computed")
            value = lookup(fg_node_value, fg_offsets[b], nf)[fg]
            labels = np.where(unreached & (value > 0), value, labels).astype(np.int32)
            far_here = np.flatnonzero(unreached & (value < 0))
            if far_here.size:
                far.append(_global_flat(far_here, labels.shape, origin, shape))
        if last is not None:
            local = tuple(c - s.start for c, s in zip(last, inner, strict=True))
            inside = np.all(
                [(x >= 0) & (x < n) for x, n in zip(local, labels.shape, strict=True)], axis=0
            )
            if inside.any():
                local = tuple(x[inside] for x in local)
                rim.append(
                    np.ravel_multi_index(
                        tuple(x + o0 for x, o0 in zip(local, origin, strict=True)), shape
                    ).astype(np.int64)
                )
                rim_labels.append(labels[local].astype(np.int64))
        core_seeds = seeds[inner]
        out[core] = np.where(core_seeds > 0, core_seeds, -labels).astype(out_dtype)
        object_size += np.bincount(labels.ravel(), minlength=n_provisional + 1)
        ids, first = first_pixels(labels)
        if ids.size:
            _min_at(first_seen, ids, _global_flat(first, labels.shape, origin, shape))
        done += 1
        yield Progress(STAGE, done, total, f"growing: block {b + 1}/{len(grid)}")

    if far:
        far = np.sort(np.concatenate(far))
        yield Progress(STAGE, done, total, f"growing: {far.size} pixels beyond the halo")
        empty = np.zeros(0, np.int64)
        far_labels = _grow_far(
            far,
            np.concatenate(rim) if rim else empty,
            np.concatenate(rim_labels) if rim else empty,
            shape,
        )
        _min_at(first_seen, far_labels, far)
        object_size += np.bincount(far_labels, minlength=n_provisional + 1)
        block_of = np.ravel_multi_index(
            tuple(c // b for c, b in zip(np.unravel_index(far, shape), grid.block, strict=True)),
            grid.counts,
        )
        for b in np.unique(block_of):
            core = grid.region(indices[b])
            mine = block_of == b
            coords = np.unravel_index(far[mine], shape)
            local = tuple(c - s.start for c, s in zip(coords, core, strict=True))
            values = np.asarray(out[core]).copy()
            values[local] = -far_labels[mine]
            out[core] = values
    del far, rim, rim_labels

    # Pass 4: ids 1..N in order of first appearance.
    kept_ids = (first_seen[1:] < np.iinfo(np.int64).max) & (object_size[1:] >= min_object_size)
    present = np.flatnonzero(kept_ids) + 1
    present = present[np.argsort(first_seen[present], kind="stable")]
    final = np.zeros(n_provisional + 1, out_dtype)
    final[present] = np.arange(1, present.size + 1)
    for b, core in enumerate(grid):
        out[core] = final[np.abs(np.asarray(out[core]))]
        done += 1
        yield Progress(STAGE, done, total, f"numbering: block {b + 1}/{len(grid)}")
    return out


def _grow_far(
    far: np.ndarray, rim: np.ndarray, rim_labels: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Finish the growth over the pixels beyond the halo, in memory.

    ``far`` (sorted flat indices) are the foreground pixels farther than the halo from every
    seed; ``rim`` holds (a superset of) the pixels at distance exactly the halo next to them,
    with their labels. The same breadth-first rule as
    :func:`~napari_tiled_unet.postprocess.grow_seeds` (smallest label wins a tie) continues
    layer by layer. Returns the label of each far pixel.
    """
    labels = np.zeros(far.size, np.int64)
    current, current_labels = rim, rim_labels
    strides = np.cumprod((1, *shape[::-1][:-1]))[::-1]
    while current.size:
        coords = np.unravel_index(current, shape)
        found, found_labels = [], []
        for axis, stride in enumerate(strides):
            for step in (-1, 1):
                ok = (coords[axis] + step >= 0) & (coords[axis] + step < shape[axis])
                neighbour = current[ok] + step * int(stride)
                where = np.minimum(np.searchsorted(far, neighbour), far.size - 1)
                hit = far[where] == neighbour
                where = where[hit]
                hit_labels = current_labels[ok][hit]
                free = labels[where] == 0
                found.append(where[free])
                found_labels.append(hit_labels[free])
        chosen, chosen_labels = smallest_label_per_pixel(found, found_labels)
        if not chosen.size:
            break
        labels[chosen] = chosen_labels
        current, current_labels = far[chosen], labels[chosen]
    if (labels == 0).any():
        raise RuntimeError("internal error: pixels beyond the halo were not reached")
    return labels
