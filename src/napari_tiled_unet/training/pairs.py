"""Training pairs: an (image, labels) pair as checked for training, and reading its windows.

Images and labels are array-likes (numpy, ``tifffile`` memmaps, zarr, dask): they are only ever
read window by window (:func:`read_window`), never converted whole, so images larger than
memory can be trained on. :func:`make_pair` and :func:`make_pairs` check a pair without
reading its pixels; :func:`~napari_tiled_unet.training.scan.scan_pair` reads it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.tiling.grid import BlockGrid
from napari_tiled_unet.tiling.stitch import mirror_indices

if TYPE_CHECKING:
    from napari_tiled_unet.axes import Layout, ModelSpec


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
        Resolved by :func:`~napari_tiled_unet.training.scan.scan_pair` (per channel, on
        ``norm_source`` if set).
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
    #: Grid of tile-sized blocks the labels were counted in (set by ``scan_pair``).
    blocks: BlockGrid | None = None
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
        """(start, stop) of block number ``block`` (C order) of the scan grid, clipped to the
        image."""
        region = self.blocks.region(np.unravel_index(block, self.blocks.counts))
        return tuple(int(s.start) for s in region), tuple(int(s.stop) for s in region)


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
        raise UserInputError(
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
            raise UserInputError(
                f"each name must be a string or an (image_name, labels_name) pair, got {name!r}"
            )
    return out


def as_sequence(arrays: Any, what: str) -> list[Any]:
    """Accept one array-like or a sequence of them."""
    if hasattr(arrays, "shape") and hasattr(arrays, "dtype"):
        return [arrays]
    if isinstance(arrays, str | bytes) or not isinstance(arrays, Sequence):
        raise UserInputError(
            f"{what} must be an array or a list of arrays, got {type(arrays).__name__}"
        )
    return list(arrays)


class PairShapeError(UserInputError):
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
        raise UserInputError(
            f"{labels_name} have floating-point dtype {labels_dtype}; labels must be integers "
            f"(class or object ids). If the values are whole numbers convert them, e.g. "
            f"labels.astype(np.uint16)"
        )
    if labels_dtype.kind not in "biu":
        raise UserInputError(f"{labels_name} must hold integers, got dtype {labels_dtype}")
    if np.dtype(image.dtype).kind not in "biuf":
        raise UserInputError(
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
        raise UserInputError(f"{image_name} is empty (shape {image_shape})")
    return TrainingPair(image, labels, image_name, labels_name, channels, channel_axis, spatial)


def make_pairs(
    image: Any,
    labels: Any,
    image_name: str,
    labels_name: str,
    ndim: int,
    *,
    axes: str | Layout | None = None,
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
    axes : str or Layout, optional
        The image's layout (e.g. ``"TYX"``, ``"YXC"``, ``"ZCYX"``; see
        :mod:`napari_tiled_unet.axes`), or a :class:`~napari_tiled_unet.axes.Layout` already
        planned for it (:func:`napari_tiled_unet.jobs.plan_training`), used as it is. None: ``(*spatial)`` or ``(C, *spatial)`` as
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
    from napari_tiled_unet.axes import AxesError, Layout, ModelSpec, choose_layout

    if isinstance(axes, Layout):
        _check_arrays(image, labels, image_name, labels_name)
        if axes.shape != tuple(int(n) for n in image.shape):
            raise PairShapeError(
                f"{image_name} has shape {tuple(image.shape)}; its layout was planned for {axes.shape}"
            )
        return _frame_pairs(image, labels, image_name, labels_name, ndim, axes)
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
    return _frame_pairs(image, labels, image_name, labels_name, ndim, layout)


def _frame_pairs(
    image: Any, labels: Any, image_name: str, labels_name: str, ndim: int, layout: Layout
) -> list[TrainingPair]:
    """One pair per frame of ``layout`` (one pair for a plain layout)."""
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
            raise UserInputError(
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
            raise UserInputError(
                f"{pair.image_name} is {size} px along {axis}, smaller than a training tile "
                f"({tile} px in, {out} px of labels out; shape {pair.spatial}). Use a smaller "
                f"TrainConfig.tile_shape, or a larger image"
            )


def read_window(
    array: Any, start: Sequence[int], stop: Sequence[int], channel_axis: bool = False
) -> np.ndarray:
    """Read ``array[start:stop]`` (spatial axes), mirror-padding where it leaves the array.

    Parameters
    ----------
    array : array-like, shape (*spatial) or (C, *spatial)
    start, stop : sequence of int
        Spatial window, pixels; may extend beyond the array on any side, by any amount.
    channel_axis : bool
        Whether ``array`` has a leading channel axis (always read whole).

    Returns
    -------
    ndarray, shape (*stop - start) or (C, *stop - start)
        Only the bounding box of the in-bounds pixels is read from ``array``; the rest is its
        mirror image without repeating the edge pixel (``numpy.pad(mode="reflect")``, reflected
        again where the window is longer than the array).
    """
    lead = (slice(None),) if channel_axis else ()
    shape = tuple(array.shape[len(lead) :])
    window = tuple(slice(s, e) for s, e in zip(start, stop, strict=True))
    if all(0 <= w.start and w.stop <= n for w, n in zip(window, shape, strict=True)):
        return np.asarray(array[lead + window])
    # Mirrored as at prediction, so training shows the network the border context it gets there.
    indices = [mirror_indices(s, e - s, n) for s, e, n in zip(start, stop, shape, strict=True)]
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in indices)
    data = np.asarray(array[lead + box])
    return data[lead + np.ix_(*(i - b.start for i, b in zip(indices, box, strict=True)))]
