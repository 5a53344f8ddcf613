"""Training pairs, their checks, and lazy random tile sampling.

Images and labels are array-likes (numpy, ``tifffile`` memmaps, zarr, dask): they are only ever
read window by window (``array[slices]``), never converted whole, so images larger than memory
can be trained on. One pass over each pair at the start (:func:`scan_pair`, in chunks of at most
:data:`SCAN_PIXELS` pixels) checks the data and counts, per tile-sized block, the pixels of each
label value; those counts drive foreground-aware sampling and class balancing.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.training.augment import Augmentation
from napari_tiled_unet.training.config import MAX_CLASSES
from napari_tiled_unet.training.targets import instance_targets, make_targets
from napari_tiled_unet.training.weights import border_weights, object_map

if TYPE_CHECKING:
    from napari_tiled_unet.axes import ModelSpec

logger = logging.getLogger(__name__)

#: Largest number of pixels read at once while scanning a pair.
SCAN_PIXELS = 2**22


# ----------------------------------------------------------------------------------------------
# Pairs and their checks


@dataclass
class TrainingPair:
    """One (image, labels) pair, as checked and scanned for training.

    Attributes
    ----------
    image : array-like, shape (*spatial) or (C, *spatial)
        Raw intensities; a leading channel axis when it has one axis more than ``labels``.
    labels : array-like of int, shape (*spatial)
    image_name, labels_name : str
        How error messages refer to them, e.g. ``"labels of 'nuclei'"``.
    channels : int
        Image channels (1 without a channel axis).
    channel_axis : bool
        Whether the image has a leading channel axis.
    spatial : tuple of int
        Spatial shape, pixels.
    normalization : Normalization or None
        Resolved by :func:`scan_pair` (per channel, on ``norm_source`` if set).
    """

    image: Any
    labels: Any
    image_name: str
    labels_name: str
    channels: int
    channel_axis: bool
    spatial: tuple[int, ...]
    normalization: Normalization | None = None
    #: What the normalisation is resolved on (None: ``image``): for the frames of one stack,
    #: the whole stack as ``(C, ...)`` (:meth:`napari_tiled_unet.axes.Layout.job`).
    norm_source: Any = None
    block_shape: tuple[int, ...] = ()
    grid: tuple[int, ...] = ()
    #: (n_blocks, n_columns) pixel counts per block: label values (semantic, sparse) or
    #: [background, object] (instance).
    block_counts: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    #: Pixels of each *target class* over the whole pair, for class balancing.
    class_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: Output-window origins held out for validation (never counted in the training loss).
    held_out: list[tuple[int, ...]] = field(default_factory=list)
    #: Scan-grid blocks those windows were chosen from (not used to place training tiles).
    held_out_blocks: list[int] = field(default_factory=list)
    #: For a frame (a plane or time point) of a larger image: that image's
    #: ``(image_name, labels_name)``; None for a whole image.
    frame_of: tuple[str, str] | None = None
    #: Channels of the C axis of the image ``channels`` were selected from (None: ``channels``).
    source_channels: int | None = None

    def block_window(self, block: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(start, stop) of a block of the scan grid, clipped to the image."""
        index = np.unravel_index(block, self.grid)
        start = tuple(int(i) * b for i, b in zip(index, self.block_shape, strict=True))
        stop = tuple(
            min(s + b, n) for s, b, n in zip(start, self.block_shape, self.spatial, strict=True)
        )
        return start, stop


def describe_pairs(
    names: Sequence[Any] | None, count: int, role: str = "pair"
) -> list[tuple[str, str]]:
    """How messages name the image and the labels of each pair.

    Parameters
    ----------
    names : sequence or None
        One entry per pair: a string (e.g. the labels layer name) or an ``(image_name,
        labels_name)`` tuple; None numbers the pairs.
    count : int
        Number of pairs.
    role : str
        "pair" or "validation pair", used when ``names`` is None.

    Returns
    -------
    list of (str, str)
        E.g. ``("image of 'nuclei'", "labels of 'nuclei'")`` or
        ``("image layer 'raw'", "labels layer 'nuclei'")``.
    """
    if names is None:
        return [(f"image of {role} {i}", f"labels of {role} {i}") for i in range(count)]
    if isinstance(names, str) or len(names) != count:
        raise ValueError(
            f"names must hold one entry per {role} ({count}), got {names!r}; pass e.g. "
            f"names=['nuclei'] or names=[('image layer', 'labels layer')]"
        )
    out = []
    for name in names:
        if isinstance(name, str):
            out.append((f"image of {name!r}", f"labels of {name!r}"))
        elif isinstance(name, Sequence) and len(name) == 2:
            out.append((f"image layer {str(name[0])!r}", f"labels layer {str(name[1])!r}"))
        else:
            raise ValueError(
                f"each name must be a string or an (image_name, labels_name) pair, got {name!r}"
            )
    return out


def as_sequence(arrays: Any, what: str) -> list[Any]:
    """Accept one array-like or a sequence of them."""
    if hasattr(arrays, "shape") and hasattr(arrays, "dtype"):
        return [arrays]
    if isinstance(arrays, str | bytes) or not isinstance(arrays, Sequence):
        raise ValueError(
            f"{what} must be an array or a list of arrays, got {type(arrays).__name__}"
        )
    return list(arrays)


class PairShapeError(ValueError):
    """An image and labels whose shapes do not match as ``(*spatial)`` or ``(C, *spatial)``."""


def make_pair(
    image: Any, labels: Any, image_name: str, labels_name: str, ndim: int
) -> TrainingPair:
    """Check an (image, labels) pair without reading its pixels.

    Raises
    ------
    ValueError
        If either is not an array, the labels are not integers, their spatial shapes differ, or
        the number of axes does not suit ``ndim`` spatial axes.
    """
    _check_arrays(image, labels, image_name, labels_name)
    labels_dtype = np.dtype(labels.dtype)
    if labels_dtype.kind == "f":
        raise ValueError(
            f"{labels_name} have floating-point dtype {labels_dtype}; labels must be integers "
            f"(class or object ids). If the values are whole numbers convert them, e.g. "
            f"labels.astype(np.uint16)"
        )
    if labels_dtype.kind not in "biu":
        raise ValueError(f"{labels_name} must hold integers, got dtype {labels_dtype}")
    if np.dtype(image.dtype).kind not in "biuf":
        raise ValueError(
            f"{image_name} must hold real numbers (bool, integer or float), got dtype {image.dtype}"
        )
    spatial = tuple(int(n) for n in labels.shape)
    axes = "ZYX"[-ndim:]
    if len(spatial) != ndim:
        raise PairShapeError(
            f"{labels_name} have shape {spatial}, expected {ndim} spatial axes ({axes}) to match "
            f"tile_shape; pass one 2D labels array per 2D image"
        )
    image_shape = tuple(int(n) for n in image.shape)
    if image_shape == spatial:
        channels, channel_axis = 1, False
    elif len(image_shape) == ndim + 1 and image_shape[1:] == spatial:
        channels, channel_axis = image_shape[0], True
    else:
        raise PairShapeError(
            f"{image_name} and {labels_name} differ in shape: image {image_shape}, labels "
            f"{spatial}. The image must have the labels' shape {spatial} (axes {axes}), or "
            f"{('C', *spatial)} with channels first"
        )
    if min(spatial) < 1:
        raise ValueError(f"{image_name} is empty (shape {image_shape})")
    return TrainingPair(image, labels, image_name, labels_name, channels, channel_axis, spatial)


def make_pairs(
    image: Any,
    labels: Any,
    image_name: str,
    labels_name: str,
    ndim: int,
    *,
    axes: str | None = None,
    in_channels: int | None = None,
    channels: Sequence[int] | None = None,
    model: ModelSpec | None = None,
) -> list[TrainingPair]:
    """Check an (image, labels) pair of any axis layout; one :class:`TrainingPair` per frame.

    Parameters
    ----------
    image, labels : array-like
        The labels have the image's axes without C, in the same order.
    image_name, labels_name : str
        For messages.
    ndim : int
        Spatial axes of the network (2: ``YX``, 3: ``ZYX``).
    axes : str, optional
        The image's layout (e.g. ``"TYX"``, ``"YXC"``, ``"ZCYX"``; see
        :mod:`napari_tiled_unet.axes`). None: ``(*spatial)`` or ``(C, *spatial)`` as
        :func:`make_pair` reads them, else inferred from the shapes (e.g. an RGB ``(Y, X, 3)``
        image, or a stack of planes with a stack of labels).
    in_channels : int, optional
        Channels of the model to fine-tune (None: any).
    channels : sequence of int, optional
        Channels of the C axis to train on, in order.
    model : ModelSpec, optional
        The model to fine-tune, instead of ``in_channels``: with ``channels`` None, an image
        whose C axis has as many channels as the model's training images is read through the
        channel selection the model was trained with (:meth:`ModelSpec.selection_for`).

    Returns
    -------
    list of TrainingPair
        One pair, or one per frame along the iterated axes (T; Z for a 2D network), named
        e.g. ``"image of 'movie' at T=3"``; frames of one image share its normalisation
        (resolved over the whole image, per channel).

    Raises
    ------
    ValueError
        As :func:`make_pair`, or an :class:`~napari_tiled_unet.axes.AxesError` naming the
        layouts considered.
    """
    from napari_tiled_unet.axes import AxesError, ModelSpec, choose_layout

    model = ModelSpec(in_channels, ndim) if model is None else replace(model, ndim=ndim)
    if channels is not None:
        model = ModelSpec(len(channels), ndim)  # an explicit selection replaces the stored one
    if axes is None and channels is None and model.channels is None:
        try:
            return [make_pair(image, labels, image_name, labels_name, ndim)]
        except PairShapeError as err:
            original = err
    else:
        original = None
    _check_arrays(image, labels, image_name, labels_name)
    try:
        layout = choose_layout(
            image.shape,
            model,
            axes=axes,
            channels=channels,
            labels_shape=labels.shape,
            name=image_name,
        )
    except AxesError as err:
        if original is None:
            raise
        considered = "; ".join(f"{a}: {p}" for a, p in err.readings if p)
        raise PairShapeError(
            f"{original} Other axis layouts considered: {considered}. Name the image's axes "
            f"with axes='...' (e.g. 'YXC', 'TYX')"
        ) from None
    if layout.is_plain:  # (*spatial) or (C, *spatial) with all channels: as make_pair reads it
        return [make_pair(image, labels, image_name, labels_name, ndim)]
    label_layout = layout.without_channels()
    source = layout.job(image)
    c = layout.channel_axis
    source_channels = 1 if c is None else layout.shape[c]
    pairs = []
    for index in layout.frames():
        where = layout.frame_name(index)
        suffix = f" at {where}" if where else ""
        pair = make_pair(
            layout.frame(image, index),
            label_layout.frame_out(labels, index),
            image_name + suffix,
            labels_name + suffix,
            ndim,
        )
        pair.norm_source = source
        pair.frame_of = (image_name, labels_name)
        pair.source_channels = source_channels
        pairs.append(pair)
    return pairs


def _check_arrays(image: Any, labels: Any, image_name: str, labels_name: str) -> None:
    for array, name in ((image, image_name), (labels, labels_name)):
        if not (
            hasattr(array, "shape") and hasattr(array, "dtype") and hasattr(array, "__getitem__")
        ):
            raise ValueError(
                f"{name} must be an array-like with shape, dtype and slicing (numpy, zarr, dask, "
                f"tifffile memmap), got {type(array).__name__}"
            )


def check_pair_size(
    pair: TrainingPair, out_shape: Sequence[int], tile_shape: Sequence[int]
) -> None:
    """Raise a ValueError if the pair is smaller than one training tile's label window."""
    axes = "ZYX"[-len(out_shape) :]
    for size, out, tile, axis in zip(pair.spatial, out_shape, tile_shape, axes, strict=True):
        if size < out:
            raise ValueError(
                f"{pair.image_name} is {size} px along {axis}, smaller than a training tile "
                f"({tile} px in, {out} px of labels out; shape {pair.spatial}). Use a smaller "
                f"TrainConfig.tile_shape, or a larger image"
            )


# ----------------------------------------------------------------------------------------------
# Reading windows


def read_window(
    array: Any, start: Sequence[int], stop: Sequence[int], channel_axis: bool = False
) -> np.ndarray:
    """Read ``array[start:stop]`` (spatial axes), mirror-padding where it leaves the array.

    Parameters
    ----------
    array : array-like, shape (*spatial) or (C, *spatial)
    start, stop : sequence of int
        Spatial window, pixels; may extend beyond the array on any side.
    channel_axis : bool
        Whether ``array`` has a leading channel axis (always read whole).

    Returns
    -------
    ndarray, shape (*stop - start) or (C, *stop - start)
        Only the in-bounds part is read from ``array``; the rest is its symmetric mirror
        (edge pixel repeated, as ``numpy.pad(mode="symmetric")``).
    """
    lead = 1 if channel_axis else 0
    shape = tuple(array.shape[lead:])
    lo = [min(max(s, 0), n - 1) for s, n in zip(start, shape, strict=True)]
    hi = [max(min(e, n), a + 1) for e, n, a in zip(stop, shape, lo, strict=True)]
    index = (slice(None),) * lead + tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    data = np.asarray(array[index])
    pads = [(a - s, e - b) for s, e, a, b in zip(start, stop, lo, hi, strict=True)]
    if any(p != (0, 0) for p in pads):
        if any(p < 0 for pair in pads for p in pair):  # window smaller than 1 px inside
            raise ValueError(f"window {tuple(start)}..{tuple(stop)} lies outside shape {shape}")
        data = np.pad(data, [(0, 0)] * lead + pads, mode="symmetric")
    return data


# ----------------------------------------------------------------------------------------------
# Scanning


def _chunks(spatial: Sequence[int], block: Sequence[int], budget: int):
    """Chunks of whole blocks, at most ``budget`` pixels (at least one block), in C order."""
    grid = [math.ceil(n / b) for n, b in zip(spatial, block, strict=True)]
    per_chunk = [1] * len(grid)
    pixels = math.prod(block)
    for axis in reversed(range(len(grid))):
        k = max(1, min(grid[axis], budget // max(pixels, 1)))
        per_chunk[axis] = k
        pixels *= k
        if k < grid[axis]:
            break
    for corner in itertools.product(
        *(range(0, g, k) for g, k in zip(grid, per_chunk, strict=True))
    ):
        blocks = [range(c, min(c + k, g)) for c, k, g in zip(corner, per_chunk, grid, strict=True)]
        start = [c * b for c, b in zip(corner, block, strict=True)]
        stop = [min((r.stop) * b, n) for r, b, n in zip(blocks, block, spatial, strict=True)]
        yield start, stop, blocks


def scan_pair(
    pair: TrainingPair,
    label_mode: str,
    block_shape: Sequence[int],
    normalization: Normalization,
    *,
    allow_empty: bool = False,
) -> bool:
    """Read a pair once, chunk by chunk, check its values and count label pixels per block.

    Fills ``pair.normalization`` (resolved for this image), ``block_shape``, ``grid``,
    ``block_counts`` and ``class_counts``.

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
    block_shape = tuple(int(b) for b in block_shape)
    grid = tuple(math.ceil(n / b) for n, b in zip(pair.spatial, block_shape, strict=True))
    per_block: dict[int, np.ndarray] = {}
    class_counts = np.zeros(3, np.int64)
    check_finite = np.dtype(pair.image.dtype).kind == "f"
    lead = (slice(None),) if pair.channel_axis else ()
    for start, stop, blocks in _chunks(pair.spatial, block_shape, SCAN_PIXELS):
        window = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        if check_finite:
            chunk = np.asarray(pair.image[lead + window])
            if not np.isfinite(chunk).all():
                where = np.argwhere(~np.isfinite(chunk))[0][len(lead) :]
                position = tuple(int(w) + a for w, a in zip(where, start, strict=True))
                raise ValueError(
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
            raise ValueError(
                f"{pair.labels_name} hold negative values (e.g. {labels.min()} at pixel "
                f"{position}); labels must be >= 0"
            )
        if label_mode != "instance" and labels.size and labels.max() >= MAX_CLASSES:
            meaning = "classes" if label_mode == "semantic" else "painted labels"
            raise ValueError(
                f"{pair.labels_name} hold values up to {labels.max()}, too many {meaning} for "
                f"label_mode={label_mode!r} (at most {MAX_CLASSES - 1}). If each value is one "
                f"object, use label_mode='instance'"
            )
        if label_mode == "instance":
            hist = np.bincount(instance_targets(labels).ravel(), minlength=3)
            class_counts[:3] += hist
        for index in itertools.product(*blocks):
            local = tuple(
                slice(i * b - a, min((i + 1) * b, n) - a)
                for i, b, a, n in zip(index, block_shape, start, pair.spatial, strict=True)
            )
            values = labels[local].ravel()
            flat = int(np.ravel_multi_index(index, grid))
            if label_mode == "instance":
                nonzero = int(np.count_nonzero(values))
                per_block[flat] = np.array([values.size - nonzero, nonzero], np.int64)
            else:
                per_block[flat] = np.bincount(values.astype(np.intp, copy=False))
    columns = max(len(c) for c in per_block.values())
    counts = np.zeros((math.prod(grid), columns), np.int64)
    for flat, c in per_block.items():
        counts[flat, : len(c)] = c
    labelled = bool(counts[:, 1:].sum())
    if not labelled and not allow_empty:
        hint = {
            "semantic": "paint at least one non-background (>0) class",
            "instance": "paint at least one object (id > 0)",
            "sparse": "paint a few strokes of each class (0 means not annotated)",
        }[label_mode]
        raise ValueError(f"{pair.labels_name} are empty (all 0); {hint}, or leave this pair out")
    if label_mode == "semantic":
        class_counts = counts.sum(axis=0)
    elif label_mode == "sparse":
        class_counts = counts.sum(axis=0)[1:]
    pair.block_shape, pair.grid = block_shape, grid
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
    if label_mode != "instance" and len(present) < 2:
        which = ", ".join(p.labels_name for p in pairs)
        if label_mode == "sparse":
            raise ValueError(
                f"{which}: only label {present[0] + 1} is painted; sparse training needs at least "
                f"two painted labels (e.g. 1 = background, 2 = object)"
            )
        raise ValueError(
            f"{which}: only class {present[0]} is present; semantic training needs at least two "
            f"classes (e.g. 0 = background and 1 = object)"
        )
    return counts


# ----------------------------------------------------------------------------------------------
# Tile geometry and sampling


@dataclass(frozen=True)
class TileLayout:
    """Where the pieces of a training sample lie, per spatial axis.

    A sample reads a region ``out_shape + 2 * (offset + margin)`` around its label window:
    the network input is its centre of ``tile_shape`` (``offset`` pixels of context each side of
    the label window, 0 for 'same' padding), and ``margin`` extra pixels give the weight map the
    objects just outside the tile.

    Parameters
    ----------
    tile_shape : tuple of int
        Network input, pixels.
    out_shape : tuple of int
        Network output = label window, pixels.
    offset : int or tuple of int
        Input pixels before the first output pixel: one number for every axis, or one per
        axis (an anisotropic 'valid' 3D network trims less along Z than along Y and X).
    margin : int
        Extra context for the weight map, pixels.
    """

    tile_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    offset: int | tuple[int, ...]
    margin: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.offset, int | np.integer):
            offsets = tuple(int(o) for o in self.offset)
            if len(offsets) != len(self.tile_shape):
                raise ValueError(
                    f"TileLayout.offset needs one entry per axis of tile_shape "
                    f"{self.tile_shape}, got {offsets}"
                )
            object.__setattr__(self, "offset", offsets)

    @property
    def offsets(self) -> tuple[int, ...]:
        """:attr:`offset` per spatial axis."""
        if isinstance(self.offset, tuple):
            return self.offset
        return (int(self.offset),) * len(self.tile_shape)

    @property
    def read_shape(self) -> tuple[int, ...]:
        return tuple(t + 2 * self.margin for t in self.tile_shape)

    def read_bounds(self, origin: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(start, stop) of the region read for a label window at ``origin``."""
        start = tuple(o - off - self.margin for o, off in zip(origin, self.offsets, strict=True))
        return start, tuple(s + r for s, r in zip(start, self.read_shape, strict=True))

    def crop(self, array: np.ndarray, by: int | Sequence[int]) -> np.ndarray:
        """Remove ``by`` pixels (one number, or one per axis) from each side of the trailing
        spatial axes."""
        ndim = len(self.tile_shape)
        per_axis = (int(by),) * ndim if isinstance(by, int | np.integer) else tuple(by)
        if not any(per_axis):
            return array
        lead = (slice(None),) * (array.ndim - ndim)
        return array[
            lead + tuple(slice(b, array.shape[-ndim + i] - b) for i, b in enumerate(per_axis))
        ]


@dataclass(frozen=True)
class SampleSettings:
    """What the sampler needs besides the pairs (derived from a ``TrainConfig``)."""

    label_mode: str
    foreground_fraction: float
    class_weight: np.ndarray | None
    use_weights: bool
    w0: float
    sigma: float
    augmentation: Augmentation


class TileSampler:
    """Draws random, augmented training tiles from scanned pairs.

    Tiles are placed on an annotated non-background pixel with probability
    ``foreground_fraction`` (a class picked uniformly among those present, then a block in
    proportion to that class's pixels, then one of its pixels) and uniformly otherwise.
    Held-out validation windows (``pair.held_out``) get weight 0.

    Parameters
    ----------
    pairs : list of TrainingPair
        Scanned pairs.
    layout : TileLayout
    settings : SampleSettings
    """

    def __init__(self, pairs: list[TrainingPair], layout: TileLayout, settings: SampleSettings):
        self.pairs, self.layout, self.settings = pairs, layout, settings
        self._areas = np.array(
            [
                math.prod(n - o + 1 for n, o in zip(p.spatial, layout.out_shape, strict=True))
                for p in pairs
            ],
            np.float64,
        )
        self._tables = self._foreground_tables()

    def _foreground_tables(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Per interesting column: (column, (pair, block) index pairs, cumulative weights)."""
        first = 1  # column 0 is background / not annotated in every mode
        columns = max(p.block_counts.shape[1] for p in self.pairs)
        tables = []
        for column in range(first, columns):
            keys, weights = [], []
            for i, p in enumerate(self.pairs):
                if column >= p.block_counts.shape[1]:
                    continue
                w = p.block_counts[:, column].astype(np.float64)
                w[p.held_out_blocks] = 0
                nz = np.flatnonzero(w)
                keys.extend((i, int(b)) for b in nz)
                weights.extend(w[nz])
            if keys:
                tables.append((column, np.array(keys), np.cumsum(weights)))
        return tables

    def sample_origin(self, rng: np.random.Generator) -> tuple[int, tuple[int, ...]]:
        """A pair index and the origin of a label window inside it."""
        out = self.layout.out_shape
        if self._tables and rng.random() < self.settings.foreground_fraction:
            column, keys, cumulative = self._tables[int(rng.integers(len(self._tables)))]
            pair_index, block = keys[
                int(np.searchsorted(cumulative, rng.random() * cumulative[-1], "right"))
            ]
            pair = self.pairs[pair_index]
            start, stop = pair.block_window(block)
            labels = read_window(pair.labels, start, stop)
            hit = labels > 0 if self.settings.label_mode == "instance" else labels == column
            for origin in pair.held_out:
                local = tuple(
                    slice(max(o - s, 0), max(o + n - s, 0))
                    for o, n, s in zip(origin, out, start, strict=True)
                )
                hit[local] = False
            candidates = np.flatnonzero(hit)
            if candidates.size:
                pixel = np.unravel_index(int(rng.choice(candidates)), hit.shape)
                # The pixel lands in the central half of the window, so that augmentation
                # (rotation, elastic warp) keeps it inside.
                origin = tuple(
                    int(np.clip(s + int(q) - int(rng.integers(o // 4, o - o // 4)), 0, n - o))
                    for s, q, o, n in zip(start, pixel, out, pair.spatial, strict=True)
                )
                return pair_index, origin
        pair_index = int(rng.choice(len(self.pairs), p=self._areas / self._areas.sum()))
        spatial = self.pairs[pair_index].spatial
        return pair_index, tuple(
            int(rng.integers(n - o + 1)) for n, o in zip(spatial, out, strict=True)
        )

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One augmented training sample.

        Returns
        -------
        image : ndarray of float32, shape (C, *tile_shape)
            Normalised network input.
        targets : ndarray of int64, shape (*out_shape)
            Class per pixel.
        weights : ndarray of float32, shape (*out_shape)
            Loss weight per pixel; 0 where not annotated or held out for validation.
        """
        layout, settings = self.layout, self.settings
        pair_index, origin = self.sample_origin(rng)
        pair = self.pairs[pair_index]
        start, stop = layout.read_bounds(origin)
        image = read_window(pair.image, start, stop, pair.channel_axis)
        image = pair.normalization.apply(image, channel_axis=0 if pair.channel_axis else None)
        if not pair.channel_axis:
            image = image[None]
        labels = read_window(pair.labels, start, stop)
        if labels.dtype == bool:
            labels = labels.view(np.uint8)
        if pair.held_out:
            keep = _keep_mask(pair, start, layout)
            image, (labels, keep) = settings.augmentation(rng, image, [labels, keep])
            keep = layout.crop(keep, [o + layout.margin for o in layout.offsets]).astype(bool)
        else:
            image, (labels,) = settings.augmentation(rng, image, [labels])
            keep = True
        image = layout.crop(image, layout.margin)
        labels = layout.crop(labels, layout.offsets)  # label window plus margin
        targets, annotated = make_targets(labels, settings.label_mode)
        if settings.use_weights:
            weights = (
                np.ones(targets.shape, np.float32)
                if settings.class_weight is None
                else settings.class_weight[targets].astype(np.float32)
            )
            if settings.w0 > 0 and settings.label_mode != "sparse":
                weights += border_weights(
                    object_map(labels, settings.label_mode), settings.w0, settings.sigma
                )
        else:
            weights = np.ones(targets.shape, np.float32)
        weights = layout.crop(weights, layout.margin)
        weights = weights * (layout.crop(annotated, layout.margin) & keep)
        targets = layout.crop(targets, layout.margin)
        return (
            np.ascontiguousarray(image, np.float32),
            np.ascontiguousarray(targets),
            np.ascontiguousarray(weights, np.float32),
        )

    def batch(
        self, rng: np.random.Generator, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``size`` samples stacked: (B, C, *tile), (B, *out) int64, (B, *out) float32."""
        samples = [self.sample(rng) for _ in range(size)]
        return tuple(np.stack(parts) for parts in zip(*samples, strict=True))  # type: ignore[return-value]


def _keep_mask(pair: TrainingPair, start: Sequence[int], layout: TileLayout) -> np.ndarray:
    """uint8 mask over the read region: 0 inside held-out validation windows, 1 elsewhere.

    Positions of the read region outside the image are mirrored, as the image is.
    """
    shape = layout.read_shape
    keep = np.ones(shape, np.uint8)
    if not pair.held_out:
        return keep
    # Mirror the region's coordinates into the image, per axis, then test each window.
    coords = []
    for s, n, size in zip(start, shape, pair.spatial, strict=True):
        c = np.arange(s, s + n)
        period = 2 * size
        c = np.mod(c, period)
        coords.append(np.where(c >= size, period - 1 - c, c))
    for origin in pair.held_out:
        inside = [
            (c >= o) & (c < o + w) for c, o, w in zip(coords, origin, layout.out_shape, strict=True)
        ]
        if all(i.any() for i in inside):
            keep[np.ix_(*inside)] = 0
    return keep


# ----------------------------------------------------------------------------------------------
# Validation tiles


def window_origin(pair: TrainingPair, block: int, out_shape: Sequence[int]) -> tuple[int, ...]:
    """Origin of a full label window covering a block, shifted inside the image at its end."""
    start, _ = pair.block_window(block)
    return tuple(min(s, n - o) for s, n, o in zip(start, pair.spatial, out_shape, strict=True))


def choose_validation_blocks(
    pairs: Sequence[TrainingPair], count: int, rng: np.random.Generator, keep_one: bool
) -> list[tuple[int, int]]:
    """Pick ``count`` annotated blocks (pair index, block) at random.

    With ``keep_one`` at least one annotated block is left over (for training); fewer blocks are
    returned when there are not enough.
    """
    annotated = [
        (i, int(b))
        for i, p in enumerate(pairs)
        for b in np.flatnonzero(p.block_counts[:, 1:].sum(axis=1))
    ]
    available = len(annotated) - (1 if keep_one else 0)
    count = max(0, min(count, available))
    if count == 0:
        return []
    chosen = rng.choice(len(annotated), size=count, replace=False)
    return [annotated[int(k)] for k in sorted(chosen)]


@dataclass
class ValidationTiles:
    """Fixed, un-augmented validation tiles held in memory.

    Attributes
    ----------
    images : ndarray of float32, shape (N, C, *tile_shape)
    targets : ndarray of int64, shape (N, *out_shape)
    annotated : ndarray of bool, shape (N, *out_shape)
    instances : ndarray of int or None, shape (N, *out_shape)
        Ground-truth object ids (instance mode), for object-level F1.
    """

    images: np.ndarray
    targets: np.ndarray
    annotated: np.ndarray
    instances: np.ndarray | None

    def __len__(self) -> int:
        return len(self.images)


def load_validation_tiles(
    tiles: Sequence[tuple[TrainingPair, tuple[int, ...]]], layout: TileLayout, label_mode: str
) -> ValidationTiles:
    """Read the validation windows ((pair, label-window origin) each) once."""
    bare = TileLayout(layout.tile_shape, layout.out_shape, layout.offset, 0)
    images, targets, annotated, instances = [], [], [], []
    for pair, origin in tiles:
        start, stop = bare.read_bounds(origin)
        image = read_window(pair.image, start, stop, pair.channel_axis)
        image = pair.normalization.apply(image, channel_axis=0 if pair.channel_axis else None)
        images.append(image if pair.channel_axis else image[None])
        stop_out = tuple(o + n for o, n in zip(origin, layout.out_shape, strict=True))
        labels = read_window(pair.labels, origin, stop_out)
        if labels.dtype == bool:
            labels = labels.view(np.uint8)
        # Targets from a window with context, so boundaries at the tile edge are right.
        grown = read_window(
            pair.labels,
            tuple(o - 1 for o in origin),
            tuple(o + 1 for o in stop_out),
        )
        t, a = make_targets(grown.view(np.uint8) if grown.dtype == bool else grown, label_mode)
        inner = (slice(1, -1),) * len(origin)
        targets.append(t[inner])
        annotated.append(a[inner])
        instances.append(labels)
    return ValidationTiles(
        np.stack(images).astype(np.float32),
        np.stack(targets),
        np.stack(annotated),
        np.stack(instances) if label_mode == "instance" else None,
    )
