"""From stitched class probabilities (or class maps) to semantic or instance label images.

No torch: numpy, scipy and scikit-image only. For class maps larger than memory see
:mod:`napari_tiled_unet.instances_blockwise`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.forward import labels_dtype

if TYPE_CHECKING:
    from napari_tiled_unet.separation import InstanceOptions

LABEL_MODES = ("semantic", "instance", "sparse")
INSTANCE_METHODS = ("components", "watershed")


def labels_from_probabilities(
    probabilities: np.ndarray,
    label_mode: str,
    *,
    method: str = "components",
    min_size: int = 4,
    options: InstanceOptions | None = None,
) -> np.ndarray:
    """Turn per-class probabilities into a label image.

    Parameters
    ----------
    probabilities : ndarray of float, shape (C, *spatial)
        Class probabilities (or logits: only their order per pixel matters, except for
        ``method="watershed"``, which reads the interior probability as a landscape).
    label_mode : {"semantic", "sparse", "instance"}
        The mode the model was trained in (``model.info.label_mode``).
        "semantic" and "sparse": the arg-max class id per pixel. For a sparse-trained model,
        class ``k`` is what was painted as label ``k + 1``. "instance": ``C`` must be 3
        (background, interior, boundary); each object gets its own id.
    method : {"components", "watershed"}
        Instance mode only. Seeds are the connected components of the interior class (pixels
        whose arg-max is "interior"); they grow into the foreground (interior or boundary
        pixels). "components" grows them by geodesic distance, a tie going to the seed that
        comes first in C order (:func:`instances_from_classes` on the arg-max; it needs only
        the class map, and :func:`~napari_tiled_unet.instances_blockwise.iter_instances_blockwise`
        computes the same block by block); "watershed" grows them along descending interior
        probability, so they meet on the most boundary-like pixels. Foreground regions that
        hold no seed (objects so thin they are all boundary) become objects of their own.
    min_size : int
        Instance mode only: seeds and leftover regions smaller than this many pixels are
        dropped (noise).
    options : InstanceOptions, optional
        Instance mode, "components" only: the separation settings of the model
        (:meth:`~napari_tiled_unet.separation.InstanceOptions.for_model`); the class map is
        refined (:func:`~napari_tiled_unet.separation.refine_classes`) and objects below
        ``options.min_object_size`` removed. They replace ``min_size``. Options with a
        diameter range are first fitted to this image's objects
        (:meth:`~napari_tiled_unet.separation.InstanceOptions.for_image`). None: the plain
        rule.

    Returns
    -------
    ndarray, shape (*spatial)
        "semantic"/"sparse": class ids in the smallest unsigned type that holds them
        (uint8; uint16 above 256 classes, uint32 above 65,536:
        :func:`~napari_tiled_unet.forward.labels_dtype`).
        "instance": int32 object ids 1..N, 0 background.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim < 2:
        raise UserInputError(
            f"probabilities must have shape (C, *spatial), got {probabilities.shape}"
        )
    num_classes = probabilities.shape[0]
    if label_mode in ("semantic", "sparse"):
        return np.argmax(probabilities, axis=0).astype(labels_dtype(num_classes))
    if label_mode != "instance":
        raise UserInputError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    check_instance_classes(num_classes, probabilities.shape)
    if method not in INSTANCE_METHODS:
        raise UserInputError(f"method must be one of {INSTANCE_METHODS}, got {method!r}")
    classes = np.argmax(probabilities, axis=0).astype(np.uint8)
    if method == "components":
        if options is None:
            return instances_from_classes(classes, min_size=min_size)
        from napari_tiled_unet.separation import refine_classes

        options = options.for_image(classes)
        return instances_from_classes(
            refine_classes(classes, options),
            min_size=options.min_seed_size,
            min_object_size=options.min_object_size,
        )
    foreground = classes != 0
    structure = ndi.generate_binary_structure(classes.ndim, 1)
    seeds, _ = ndi.label(classes == 1, structure=structure)
    if min_size > 1:
        seeds = remove_small(seeds, min_size)
    landscape = -np.asarray(probabilities[1], np.float32)
    labels = watershed(landscape, markers=seeds, mask=foreground, connectivity=1)
    return _add_leftover(labels, foreground, min_size)


def check_instance_classes(num_classes: int, shape: tuple[int, ...] | None = None) -> None:
    """Raise a UserInputError unless a network with ``num_classes`` outputs can give instances."""
    if num_classes != 3:
        seen = "" if shape is None else f" (shape {shape})"
        raise UserInputError(
            f"instance mode needs 3 probability channels (background, interior, boundary), "
            f"got {num_classes}{seen}; was the model trained with label_mode='instance'?"
        )


def instances_from_classes(
    classes: np.ndarray, min_size: int = 4, min_object_size: int = 0
) -> np.ndarray:
    """Object ids from a class map of an instance-trained model ("components" method).

    This is the definition that the blockwise labeller
    (:func:`napari_tiled_unet.instances_blockwise.iter_instances_blockwise`) reproduces
    exactly, for images larger than memory.

    1. Seeds: connected components (face connectivity: 4 in 2D, 6 in 3D) of the interior
       pixels; seeds with fewer than ``min_size`` pixels are dropped.
    2. Growth: every foreground pixel (interior or boundary) connected to a seed goes to the
       nearest seed, by geodesic distance (steps between face neighbours, through foreground
       only). A pixel at the same distance from several seeds goes to the seed whose first
       pixel comes first in C (raster) order; so does each pixel grown from it. (A
       breadth-first search, layer by layer, in which a tie goes to the smallest seed
       number.)
    3. Leftovers: foreground regions that hold no seed (objects that are all boundary)
       become objects of their own, unless smaller than ``min_size`` pixels.
    4. Objects smaller than ``min_object_size`` pixels are removed (background).
    5. Ids 1..N in order of first appearance in C order; 0 is background.

    Parameters
    ----------
    classes : ndarray of int, shape (*spatial)
        0 background, 1 interior, 2 boundary (any other non-zero value counts as boundary):
        the arg-max class per pixel.
    min_size : int
        Seeds and leftover regions smaller than this many pixels are dropped.
    min_object_size : int
        Objects (after growth) smaller than this many pixels are removed; 0: none.

    Returns
    -------
    ndarray of int32, shape (*spatial)
    """
    classes = np.asarray(classes)
    foreground = classes != 0
    structure = ndi.generate_binary_structure(classes.ndim, 1)
    seeds, _ = ndi.label(classes == 1, structure=structure)
    if min_size > 1:
        seeds = remove_small(seeds, min_size)
    seeds = relabel_in_raster_order(
        seeds
    )  # seed numbers in raster order of their first pixel: the tie rule
    labels, _ = grow_seeds(seeds, foreground)
    return _add_leftover(labels, foreground, min_size, min_object_size)


def _add_leftover(
    labels: np.ndarray, foreground: np.ndarray, min_size: int, min_object_size: int = 0
) -> np.ndarray:
    """Foreground regions without a seed become objects, objects below ``min_object_size``
    go; then ids 1..N, first seen first."""
    structure = ndi.generate_binary_structure(labels.ndim, 1)
    leftover, n_left = ndi.label(foreground & (labels == 0), structure=structure)
    if n_left:
        if min_size > 1:
            leftover = remove_small(leftover, min_size)
        labels = np.where(leftover > 0, leftover + labels.max(initial=0), labels)
    if min_object_size > 1:
        labels = remove_small(labels, min_object_size)
    return relabel_in_raster_order(labels).astype(np.int32, copy=False)


def grow_seeds(
    seeds: np.ndarray, foreground: np.ndarray, max_steps: int | None = None
) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
    """Grow seeds into the foreground by geodesic distance; a tie goes to the smaller id.

    A breadth-first search, one distance layer at a time (face neighbours): a foreground
    pixel at distance ``d`` from the nearest seed takes the smallest label among its
    neighbours at distance ``d - 1``. The result is fully determined by ``seeds`` and
    ``foreground`` (unlike a priority-queue watershed, whose ties depend on the queue), so
    a block with a wide enough halo gives the same labels as the whole image.

    Parameters
    ----------
    seeds : ndarray of int, shape (*spatial)
        Seed ids (> 0), 0 elsewhere; ids below 2**31. Seeds must lie in the foreground.
    foreground : ndarray of bool, shape (*spatial)
        Where seeds may grow.
    max_steps : int, optional
        Stop after this many layers (pixels farther away stay 0).

    Returns
    -------
    labels : ndarray of int32, shape (*spatial)
        Seeds and grown pixels; 0 elsewhere (background, and foreground no seed reached).
    last : tuple of ndarray or None
        Only when the search stopped at ``max_steps`` with pixels left to grow into: the
        coordinates of the pixels of the last layer (distance ``max_steps``) that have an
        unreached foreground neighbour. None otherwise.
    """
    seeds = np.asarray(seeds)
    foreground = np.asarray(foreground, dtype=bool)
    if seeds.shape != foreground.shape:
        raise ValueError(f"seeds {seeds.shape} and foreground {foreground.shape} differ")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    ndim = seeds.ndim
    inner = (slice(1, -1),) * ndim
    padded = tuple(n + 2 for n in seeds.shape)  # a frame of non-foreground: no wrap-around
    labels = np.zeros(padded, np.int32)
    labels[inner] = seeds
    open_ = np.zeros(padded, bool)  # foreground not reached yet
    open_[inner] = foreground & (seeds == 0)

    # Layer 1, on whole arrays: the smallest seed id among the face neighbours. Seen as
    # unsigned, ``id - 1`` turns "no seed" (0) into the largest value.
    best = np.full(seeds.shape, np.iinfo(np.uint32).max, np.uint32)
    as_unsigned = labels.view(np.uint32)
    for axis in range(ndim):
        for step in (-1, 1):
            window = list(inner)
            window[axis] = slice(1 + step, padded[axis] - 1 + step)
            np.minimum(best, as_unsigned[tuple(window)] - np.uint32(1), out=best)
    grown = open_[inner] & (best != np.iinfo(np.uint32).max)
    best += np.uint32(1)
    labels[inner][grown] = best.view(np.int32)[grown]
    open_[inner] &= ~grown
    del best

    flat_labels = labels.ravel()
    flat_open = open_.ravel()
    strides = np.cumprod((1, *padded[::-1][:-1]))[::-1]
    offsets = [int(s) * d for s in strides for d in (-1, 1)]
    frontier = np.flatnonzero(np.pad(grown, 1))
    del grown
    steps = 1
    while frontier.size and (max_steps is None or steps < max_steps):
        frontier_labels = flat_labels[frontier]
        found, found_labels = [], []
        for offset in offsets:
            neighbour = frontier + offset
            hit = flat_open[neighbour]
            found.append(neighbour[hit])
            found_labels.append(frontier_labels[hit])
        frontier, chosen = smallest_label_per_pixel(found, found_labels)
        if not frontier.size:
            break
        flat_labels[frontier] = chosen
        flat_open[frontier] = False
        steps += 1
    last = None
    if frontier.size and max_steps is not None and steps >= max_steps:
        touching = np.zeros(frontier.size, bool)
        for offset in offsets:
            touching |= flat_open[frontier + offset]
        if touching.any():
            coords = np.unravel_index(frontier[touching], padded)
            last = tuple(c - 1 for c in coords)
    return labels[inner], last


def smallest_label_per_pixel(
    pixels: Sequence[np.ndarray], labels: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """One breadth-first layer's outcome: each reached pixel (flat index, sorted) and the
    smallest of the labels that reached it (the tie rule of :func:`grow_seeds`).

    ``pixels[i]`` and ``labels[i]`` are parallel arrays, one pair per neighbour direction.
    """
    candidates = np.concatenate(pixels)
    if not candidates.size:
        return candidates, candidates
    order = np.argsort(candidates, kind="stable")
    candidates = candidates[order]
    starts = np.flatnonzero(np.r_[True, candidates[1:] != candidates[:-1]])
    return candidates[starts], np.minimum.reduceat(np.concatenate(labels)[order], starts)


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set objects with fewer than ``min_size`` pixels to 0 (works on any skimage version)."""
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    return np.where(small[labels], 0, labels)


def first_pixels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero ids of ``labels`` and the flat (C-order) index of each one's first pixel.

    Only the starts of runs along the last axis can be first pixels, so only they are sorted.
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        empty = np.zeros(0, np.intp)
        return empty, empty
    rows = labels.reshape(-1, labels.shape[-1])
    starts = np.ones(rows.shape, bool)
    np.not_equal(rows[:, 1:], rows[:, :-1], out=starts[:, 1:])
    starts &= rows != 0
    where = np.flatnonzero(starts)
    ids, first = np.unique(rows.ravel()[where], return_index=True)
    return ids, where[first]


def relabel_in_raster_order(labels: np.ndarray) -> np.ndarray:
    """Consecutive ids 1..N in order of first appearance (C order), 0 kept."""
    ids, first = first_pixels(labels)
    order = ids[np.argsort(first)]
    dtype = np.int32 if order.size < 2**31 - 1 else np.int64
    lookup = np.zeros(int(labels.max(initial=0)) + 1, dtype)
    lookup[order] = np.arange(1, order.size + 1)
    return lookup[labels]
