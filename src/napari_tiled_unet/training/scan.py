"""Scanning training pairs: one pass over each pair checks its values and counts its labels.

:func:`scan_pair` reads a pair once, in chunks of whole tile-sized blocks of at most
:data:`SCAN_PIXELS` pixels, checks the image and label values and counts, per block, the pixels
of each label value; those counts drive foreground-aware sampling
(:class:`~napari_tiled_unet.training.sampler.TileSampler`), the choice of validation blocks and
class balancing (:func:`count_classes`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.tiling.grid import BlockGrid
from napari_tiled_unet.training.config import MAX_CLASSES
from napari_tiled_unet.training.pairs import TrainingPair
from napari_tiled_unet.training.targets import INSTANCE_MODES, make_targets

#: Largest number of pixels read at once while scanning a pair.
SCAN_PIXELS = 2**22
#: What to paint, per label mode, when labels are empty (all 0).
EMPTY_LABELS_HINTS = {
    "semantic": "paint at least one non-background (>0) class",
    "instance": "paint at least one object (id > 0)",
    "sparse": "paint a few strokes of each class (0 means not annotated)",
    "sparse-instance": "paint a few whole objects (2, 3, ...) and some background (1); 0 "
    "means not annotated",
}


def scan_chunks(blocks: BlockGrid, budget: int) -> BlockGrid:
    """Chunks of whole blocks of ``blocks``, at most ``budget`` pixels each (at least one block).

    Parameters
    ----------
    blocks : BlockGrid
        The blocks of an image.
    budget : int
        Largest number of pixels per chunk.

    Returns
    -------
    BlockGrid
        A grid over the *block indices* of ``blocks``: each of its regions is one chunk, as
        slices of block indices, in C order. A chunk spans whole rows of blocks along the last
        axes as far as the budget allows.
    """
    counts = blocks.counts
    per_chunk = [1] * len(counts)
    pixels = math.prod(blocks.block)
    for axis in reversed(range(len(counts))):
        k = max(1, min(counts[axis], budget // max(pixels, 1)))
        per_chunk[axis] = k
        pixels *= k
        if k < counts[axis]:
            break
    return BlockGrid(counts, tuple(per_chunk))


def chunk_window(blocks: BlockGrid, chunk: Sequence[slice]) -> tuple[slice, ...]:
    """The pixels (slices, clipped to the image) of a chunk of :func:`scan_chunks`."""
    first = blocks.region([s.start for s in chunk])
    last = blocks.region([s.stop - 1 for s in chunk])
    return tuple(slice(a.start, b.stop) for a, b in zip(first, last, strict=True))


def scan_pair(
    pair: TrainingPair,
    label_mode: str,
    block_shape: Sequence[int],
    normalization: Normalization,
    *,
    allow_empty: bool = False,
) -> bool:
    """Read a pair once, chunk by chunk, check its values and count label pixels per block.

    Fills ``pair.normalization`` (resolved for this image), ``blocks`` (the grid of
    ``block_shape`` blocks), ``block_counts`` and ``class_counts``.

    Parameters
    ----------
    allow_empty : bool
        Accept labels that are all 0 (a plane of a stack that was not painted) instead of
        raising.

    Returns
    -------
    bool
        Whether the labels hold any non-zero value.

    Raises
    ------
    ValueError
        If the image holds NaN or infinite values, the labels are negative, empty (all 0, unless
        ``allow_empty``), or (semantic mode) hold more values than classes make sense.
    """
    blocks = BlockGrid(pair.spatial, tuple(int(b) for b in block_shape))
    per_block: dict[int, np.ndarray] = {}
    class_counts = np.zeros(3, np.int64)
    check_finite = np.dtype(pair.image.dtype).kind == "f"
    lead = (slice(None),) if pair.channel_axis else ()
    for chunk in scan_chunks(blocks, SCAN_PIXELS):
        window = chunk_window(blocks, chunk)
        start = [w.start for w in window]
        if check_finite:
            image = np.asarray(pair.image[lead + window])
            if not np.isfinite(image).all():
                where = np.argwhere(~np.isfinite(image))[0][len(lead) :]
                position = tuple(int(w) + a for w, a in zip(where, start, strict=True))
                raise UserInputError(
                    f"{pair.image_name} contains NaN or infinite values (first at pixel "
                    f"{position}); replace them (e.g. numpy.nan_to_num) or crop them away "
                    f"before training"
                )
        labels = np.asarray(pair.labels[window])
        if labels.dtype == bool:
            labels = labels.view(np.uint8)
        if labels.size and labels.min() < 0:
            position = tuple(
                int(w) + a for w, a in zip(np.argwhere(labels < 0)[0], start, strict=True)
            )
            raise UserInputError(
                f"{pair.labels_name} hold negative values (e.g. {labels.min()} at pixel "
                f"{position}); labels must be >= 0"
            )
        instance = label_mode in INSTANCE_MODES
        if not instance and labels.size and labels.max() >= MAX_CLASSES:
            meaning = "classes" if label_mode == "semantic" else "painted labels"
            raise UserInputError(
                f"{pair.labels_name} hold values up to {labels.max()}, too many {meaning} for "
                f"label_mode={label_mode!r} (at most {MAX_CLASSES - 1}). If each value is one "
                f"object, use label_mode='instance'"
            )
        if instance:
            targets, annotated = make_targets(labels, label_mode)
            class_counts[:3] += np.bincount(targets[annotated].ravel(), minlength=3)
        for index in itertools.product(*(range(s.start, s.stop) for s in chunk)):
            local = tuple(
                slice(r.start - a, r.stop - a)
                for r, a in zip(blocks.region(index), start, strict=True)
            )
            values = labels[local].ravel()
            flat = int(np.ravel_multi_index(index, blocks.counts))
            if instance:
                nonzero = int(np.count_nonzero(values))
                per_block[flat] = np.array([values.size - nonzero, nonzero], np.int64)
            else:
                per_block[flat] = np.bincount(values.astype(np.intp, copy=False))
    columns = max(len(c) for c in per_block.values())
    counts = np.zeros((len(blocks), columns), np.int64)
    for flat, c in per_block.items():
        counts[flat, : len(c)] = c
    labelled = bool(counts[:, 1:].sum())
    if not labelled and not allow_empty:
        hint = EMPTY_LABELS_HINTS[label_mode]
        raise UserInputError(
            f"{pair.labels_name} are empty (all 0); {hint}, or leave this pair out"
        )
    if label_mode == "semantic":
        class_counts = counts.sum(axis=0)
    elif label_mode == "sparse":
        class_counts = counts.sum(axis=0)[1:]
    pair.blocks = blocks
    pair.block_counts, pair.class_counts = counts, class_counts
    if pair.normalization is None:
        source = pair.image if pair.norm_source is None else pair.norm_source
        axis = 0 if pair.channel_axis or pair.norm_source is not None else None
        pair.normalization = normalization.resolve(source, channel_axis=axis)
    return labelled


def count_classes(pairs: Sequence[TrainingPair], label_mode: str) -> np.ndarray:
    """Pixels per target class over all scanned pairs, shape (num_classes,).

    Raises
    ------
    ValueError
        If fewer than two classes are present (semantic, sparse), naming the pairs.
    """
    width = max(len(p.class_counts) for p in pairs)
    counts = np.zeros(width, np.int64)
    for p in pairs:
        counts[: len(p.class_counts)] += p.class_counts
    present = np.flatnonzero(counts)
    if label_mode not in INSTANCE_MODES and len(present) < 2:
        which = ", ".join(p.labels_name for p in pairs)
        if label_mode == "sparse":
            raise UserInputError(
                f"{which}: only label {present[0] + 1} is painted; sparse training needs at least "
                f"two painted labels (e.g. 1 = background, 2 = object)"
            )
        raise UserInputError(
            f"{which}: only class {present[0]} is present; semantic training needs at least two "
            f"classes (e.g. 0 = background and 1 = object)"
        )
    return counts


def rescan_box(
    pair: TrainingPair, label_mode: str, start: Sequence[int], stop: Sequence[int]
) -> list[int]:
    """Count the label pixels again in the scan blocks a box of ``pair`` touches.

    For labels painted while training runs: only those blocks are read, ``block_counts`` is
    updated (widened when a new label value appears); ``class_counts`` (the class balance
    chosen at the start) is left as it was.

    Parameters
    ----------
    pair : TrainingPair
        A scanned pair.
    label_mode : str
    start, stop : sequence of int
        The changed box, pixels (clipped to the pair).

    Returns
    -------
    list of int
        The re-counted blocks (flat indices, C order); empty for a box outside the pair.
    """
    blocks = pair.blocks
    lo = [max(0, int(s)) // b for s, b in zip(start, blocks.block, strict=True)]
    hi = [
        (min(int(e), n) - 1) // b for e, n, b in zip(stop, pair.spatial, blocks.block, strict=True)
    ]
    if any(h < low for low, h in zip(lo, hi, strict=True)):
        return []
    changed = []
    for index in itertools.product(*(range(a, b + 1) for a, b in zip(lo, hi, strict=True))):
        region = blocks.region(index)
        labels = np.asarray(pair.labels[region])
        values = labels.view(np.uint8) if labels.dtype == bool else labels
        values = values.ravel()
        if label_mode in INSTANCE_MODES:
            nonzero = int(np.count_nonzero(values))
            counts = np.array([values.size - nonzero, nonzero], np.int64)
        else:
            counts = np.bincount(np.clip(values, 0, MAX_CLASSES - 1).astype(np.intp))
        if len(counts) > pair.block_counts.shape[1]:
            pair.block_counts = np.pad(
                pair.block_counts, ((0, 0), (0, len(counts) - pair.block_counts.shape[1]))
            )
        flat = int(np.ravel_multi_index(index, blocks.counts))
        pair.block_counts[flat] = 0
        pair.block_counts[flat, : len(counts)] = counts
        changed.append(flat)
    return changed
