"""Axis layouts: what each axis of an image means, and how a model reads it.

A layout is a string of axis letters, one per axis of the array, in the array's order:

- ``T`` time, ``Z`` depth, ``C`` channel, ``Y`` height, ``X`` width (each at most once; ``Y``
  and ``X`` always present), e.g. ``"TZCYX"`` (ImageJ hyperstacks), ``"YXC"`` (RGB),
  ``"CYX"``, ``"ZYX"``.

A model takes ``(C, *spatial)`` with ``spatial`` = ``YX`` (2D) or ``ZYX`` (3D) and
``in_channels`` channels. :func:`plan_layout` maps an image layout onto that: the channel axis
(absent for a single-channel image; ``channels`` picks and orders channels, and a model trained
on a selection reads images with its training images' channel count through that selection
unless ``channels`` says otherwise, see :class:`ModelSpec`), the spatial axes,
and the *iterated* axes -- T, and Z for a 2D model -- over which the image is predicted frame
by frame (or plane by plane). :class:`Layout` then gives lazy views: :meth:`Layout.frame` is
one frame as ``(C, *spatial)`` read window by window from any array-like (numpy, memmap, zarr,
dask, napari layer data), without reading the image.

When the layout is not given it is inferred (:func:`infer_axes`) from TIFF metadata
(tifffile's series axes: ``S`` samples/RGB reads as ``C``; ``I``, ``Q`` and other letters are
unknown), napari's ``axis_labels`` and ``rgb`` (an RGB layer's trailing axis is ``C``), or
the shape alone (the last two axes are ``Y, X``, or ``Y, X, C`` when the last axis has at most
4 entries, e.g. RGB as napari guesses it). Unknown axes are tried as ``Z``, ``T`` and ``C``; the
readings the model cannot take are dropped; what is left must agree on how the model reads
the image, else :class:`AxesError` lists every reading considered.

Readings that differ only in the *name* of an iterated axis are the same computation -- a 2D
model predicts a ``(5, 512, 512)`` stack plane by plane whether the first axis is Z or T -- so
they are not ambiguous: the first in the order ``Z``, ``T``, ``C`` (canonical ``TZC`` order for
several unknown axes) is chosen, and a 2D model over a stack "just works".

Pure numpy: no torch, napari or Qt, so widgets can call it on every layer change.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The axis letters, in canonical (ImageJ hyperstack) order.
AXES = "TZCYX"
#: Letter of an axis whose meaning is unknown (in hints, never in a layout).
UNKNOWN = "?"
#: What each letter means, for messages.
AXIS_NAMES = {"T": "time", "Z": "depth", "C": "channel", "Y": "height", "X": "width"}
#: tifffile's series axis letters that have a meaning here (``S``: samples, e.g. RGB).
TIFF_LETTERS = {"T": "T", "Z": "Z", "C": "C", "S": "C", "Y": "Y", "X": "X"}
#: napari ``axis_labels`` (lower-cased) that name an axis.
LABEL_NAMES = {
    "t": "T",
    "time": "T",
    "z": "Z",
    "depth": "Z",
    "c": "C",
    "channel": "C",
    "channels": "C",
    "y": "Y",
    "x": "X",
}
#: A bare array's last axis this short (or shorter) is read as channels (RGB(A), ...).
MAX_CHANNELS_LAST = 4
#: Letters tried for an unknown axis, most likely first.
_FILL_ORDER = "ZTC"


class AxesError(ValueError):
    """An axis layout that is invalid, does not suit the model, or is ambiguous.

    Attributes
    ----------
    readings : list of (str, str or None)
        Every layout considered and why it does not fit (None: it fits).
    """

    def __init__(self, message: str, readings: Sequence[tuple[str, str | None]] = ()):
        super().__init__(message)
        self.readings = list(readings)


def stored_selection(
    metadata: dict[str, Any] | None, in_channels: int | None = None
) -> tuple[tuple[int, ...] | None, int | None]:
    """The channel selection a model file stores: ``(channels, source_channels)``.

    ``channels`` are the channels of the training images' C axis the model was trained on, in
    order; ``source_channels`` how many channels those images had (None if they differed).
    Model files written before selections were stored give ``(None, None)``.

    Raises
    ------
    ValueError
        If the entries are inconsistent (with each other or with ``in_channels``).
    """
    metadata = metadata or {}
    channels, source = metadata.get("channels"), metadata.get("source_channels")
    if channels is None:
        if source is not None:
            raise ValueError(f"source_channels {source!r} is stored without a channel selection")
        return None, None
    try:
        channels = tuple(operator.index(k) for k in channels)
        source = None if source is None else operator.index(source)
    except TypeError:
        raise ValueError(
            f"the stored channel selection must be channel numbers and source_channels a "
            f"number, got channels={metadata['channels']!r}, source_channels={source!r}"
        ) from None
    if not channels or min(channels) < 0:
        raise ValueError(f"the stored channel selection {list(channels)} is not channel numbers")
    if in_channels is not None and len(channels) != in_channels:
        raise ValueError(
            f"the stored channel selection {list(channels)} has {len(channels)} channel(s) but "
            f"the model takes {in_channels}"
        )
    if source is not None and max(channels) >= source:
        raise ValueError(
            f"the stored channel selection {list(channels)} does not fit images of {source} "
            f"channel(s) (source_channels)"
        )
    return channels, source


@dataclass(frozen=True)
class ModelSpec:
    """What a model takes: ``in_channels`` channels of ``ndim`` spatial axes.

    Parameters
    ----------
    in_channels : int or None
        Input channels; None: any number (a model still to be trained takes what the data have).
    ndim : {2, 3}
        Spatial axes: ``YX`` or ``ZYX``.
    channels : sequence of int, optional
        The channel selection the model was trained with (stored in its model file): an image
        whose C axis has ``source_channels`` channels is read through it unless the caller
        selects channels.
    source_channels : int, optional
        Channels of the training images the selection was made from (None: unknown, the
        selection is then never applied by itself).
    """

    in_channels: int | None
    ndim: int
    channels: tuple[int, ...] | None = None
    source_channels: int | None = None

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3):
            raise ValueError(f"ModelSpec.ndim must be 2 or 3, got {self.ndim!r}")
        if self.in_channels is not None and self.in_channels < 1:
            raise ValueError(f"ModelSpec.in_channels must be >= 1, got {self.in_channels!r}")
        metadata = {"channels": self.channels, "source_channels": self.source_channels}
        channels, source = stored_selection(metadata, self.in_channels)
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "source_channels", source)

    @classmethod
    def of(cls, model: Any) -> ModelSpec:
        """The spec of a ``UNet``, a ``UNetConfig``, a ModelSpec or an ``(in_channels, ndim)`` pair.

        A ``UNet``'s stored channel selection (``metadata["channels"]`` and
        ``["source_channels"]``, see :func:`stored_selection`) comes with it.
        """
        if isinstance(model, ModelSpec):
            return model
        if isinstance(model, tuple) and len(model) == 2:
            return cls(*model)
        config = getattr(model, "config", model)
        try:
            in_channels, ndim = int(config.in_channels), int(config.ndim)
        except AttributeError:
            raise TypeError(
                f"expected a UNet, a UNetConfig or a ModelSpec, got {type(model).__name__}"
            ) from None
        metadata = getattr(model, "metadata", None)
        return cls(in_channels, ndim, *stored_selection(metadata, in_channels))

    @property
    def spatial(self) -> str:
        """``"YX"`` or ``"ZYX"``."""
        return "ZYX"[-self.ndim :]

    def selection_for(self, n_channels: int) -> tuple[int, ...] | None:
        """The stored selection if a C axis of ``n_channels`` is read through it, else None.

        It is, when ``n_channels`` is the training images' channel count (``source_channels``).
        """
        if self.channels is None or n_channels != self.source_channels:
            return None
        return self.channels

    def plain_axes(self, ndim: int | None = None) -> str:
        """The layout the model takes without iteration: ``YX``, ``ZYX``, ``CYX`` or ``CZYX``.

        For ``in_channels=None``, ``ndim`` (the image's number of axes) decides whether a
        channel axis comes first.
        """
        channel = self.in_channels != 1 if self.in_channels is not None else ndim == self.ndim + 1
        if self.source_channels is not None and self.source_channels > 1:
            channel = True  # a selection is read from a C axis
        return ("C" if channel else "") + self.spatial

    def describe(self) -> str:
        """E.g. "a 2D single-channel image with axes YX" (as the engine's errors say)."""
        if self.in_channels == 1:
            return f"a {self.ndim}D single-channel image with axes {self.spatial}"
        if self.in_channels is None:
            return f"a {self.ndim}D image with axes {self.spatial} or C{self.spatial}"
        return f"a {self.ndim}D image with {self.in_channels} channels, axes C{self.spatial}"


# ----------------------------------------------------------------------------------------------
# Layout strings and hints


def parse_axes(axes: str, ndim: int | None = None, *, name: str = "image") -> str:
    """Validate a user's layout string; return it upper-cased.

    Parameters
    ----------
    axes : str
        E.g. ``"TZCYX"``, ``"yxc"``: letters T, Z, C, Y, X, each at most once, Y and X
        required.
    ndim : int, optional
        The image's number of axes, which the string must match.
    name : str
        How to call the image in the error message.

    Raises
    ------
    AxesError
        Naming the problem and the letters allowed.
    """
    if not isinstance(axes, str):
        raise AxesError(f"axes must be a string such as 'TZCYX', got {type(axes).__name__}")
    letters = axes.strip().upper()
    rule = (
        "use the letters T (time), Z (depth), C (channel), Y (height) and X (width), "
        "each at most once, one per axis, Y and X included"
    )
    problem = None
    bad = sorted({a for a in letters if a not in AXES})
    if bad:
        problem = f"unknown letter(s) {', '.join(bad)}"
    elif len(set(letters)) != len(letters):
        repeated = sorted({a for a in letters if letters.count(a) > 1})
        problem = f"{', '.join(repeated)} given more than once"
    elif "Y" not in letters or "X" not in letters:
        problem = "Y and X are required"
    elif ndim is not None and len(letters) != ndim:
        problem = f"{len(letters)} letters for an image of {ndim} axes"
    if problem:
        raise AxesError(f"axes {axes!r} for {name}: {problem}; {rule}")
    return letters


def axes_from_tiff(letters: str) -> str:
    """tifffile series axes as a hint: ``S`` becomes ``C``, letters without a meaning ``?``.

    ``"YXS"`` (RGB) gives ``"YXC"``, ``"QYX"`` gives ``"?YX"``, ``"TZCYX"`` stays.
    """
    out: list[str] = []
    for letter in str(letters).upper():
        mapped = TIFF_LETTERS.get(letter, UNKNOWN)
        out.append(UNKNOWN if mapped in out else mapped)
    return "".join(out)


def axes_from_layer(ndim: int, axis_labels: Sequence[Any] | None = None, rgb: bool = False) -> str:
    """A napari layer's axes as a hint (``?`` where the labels say nothing).

    Parameters
    ----------
    ndim : int
        Axes of the layer's data (for an RGB layer, its ``ndim`` + 1).
    axis_labels : sequence, optional
        The layer's ``axis_labels``: ``"t"``/``"time"``, ``"z"``/``"depth"``,
        ``"c"``/``"channel"``, ``"y"``, ``"x"`` (any case) name an axis; napari's default
        labels (``"-2"``, ``"0"``, ...) do not. For an RGB layer they cover the axes before
        the colour axis.
    rgb : bool
        The layer is RGB(A): its last data axis is ``C``.
    """
    lead = ndim - 1 if rgb else ndim
    labels = list(axis_labels) if axis_labels is not None else []
    if len(labels) == ndim and rgb:
        labels = labels[:lead]
    if len(labels) != lead:
        labels = [None] * lead
    out: list[str] = []
    for label in labels:
        mapped = LABEL_NAMES.get(str(label).strip().lower(), UNKNOWN) if label is not None else "?"
        out.append(UNKNOWN if mapped in out or (rgb and mapped == "C") else mapped)
    if rgb:
        out.append("C")
    return "".join(out)


def _fill(hint: str, shape: tuple[int, ...]) -> list[str]:
    """Complete layouts for a hint, most likely first (see :func:`readings`)."""
    letters = list(hint)
    unknown = [i for i, a in enumerate(letters) if a == UNKNOWN]
    missing = [a for a in "YX" if a not in letters]
    if len(missing) > len(unknown):
        return []
    # Missing Y, X take the last unknown positions, in order (napari's display convention).
    for position, letter in zip(unknown[len(unknown) - len(missing) :], missing, strict=True):
        letters[position] = letter
    unknown = unknown[: len(unknown) - len(missing)]
    available = [a for a in _FILL_ORDER if a not in letters]
    if len(unknown) > len(available):
        return []
    options = []
    for choice in itertools.permutations(available, len(unknown)):
        canonical = list(choice) == sorted(choice, key=AXES.index)
        options.append(((not canonical, [_FILL_ORDER.index(a) for a in choice]), choice))
    options.sort(key=lambda item: item[0])
    layouts = []
    for _, choice in options:
        for position, letter in zip(unknown, choice, strict=True):
            letters[position] = letter
        layouts.append("".join(letters))
    return layouts


def _hints(
    shape: tuple[int, ...],
    tiff_axes: str | None,
    rgb: bool | None,
    axis_labels: Sequence[Any] | None,
) -> list[str]:
    ndim = len(shape)
    if tiff_axes is not None:
        return [axes_from_tiff(tiff_axes)]
    if axis_labels is not None or rgb is not None:
        return [axes_from_layer(ndim, axis_labels, bool(rgb))]
    # A bare array: Y, X last -- or Y, X, C when the last axis is short (at most 4 entries:
    # RGB(A) as napari guesses it, or a few channels last); an image 4 px wide is not one to
    # segment, so that X reading is not considered.
    if ndim >= 3 and shape[-1] <= MAX_CHANNELS_LAST and shape[-2] > MAX_CHANNELS_LAST:
        return [UNKNOWN * (ndim - 1) + "C"]
    return [UNKNOWN * ndim]


def readings(
    shape: Sequence[int],
    *,
    tiff_axes: str | None = None,
    rgb: bool | None = None,
    axis_labels: Sequence[Any] | None = None,
) -> list[str]:
    """Every layout the metadata (or, without any, the shape) allows, most likely first.

    Unknown axes are filled with Z, T and C (each at most once), preferring Z, then T, then C,
    and the canonical order ``TZC`` when several are unknown.
    """
    shape = tuple(int(n) for n in shape)
    found: list[str] = []
    for hint in _hints(shape, tiff_axes, rgb, axis_labels):
        if len(hint) != len(shape):
            raise AxesError(
                f"the metadata name {len(hint)} axes ({hint}) but the image has {len(shape)} "
                f"(shape {shape})"
            )
        found.extend(r for r in _fill(hint, shape) if r not in found)
    return found


# ----------------------------------------------------------------------------------------------
# Fitting a layout to a model


def stored_channels(axes: str, shape: Sequence[int], model: Any) -> tuple[int, ...] | None:
    """The model's stored channel selection if it applies to this layout, else None.

    It applies when the layout's C axis has as many channels as the model's training images
    had (:meth:`ModelSpec.selection_for`); the caller then gave no ``channels`` of their own.
    """
    c = axes.find("C")
    if c < 0 or model is None:
        return None
    return ModelSpec.of(model).selection_for(int(shape[c]))


def _selection_note(spec: ModelSpec | None) -> str:
    """A sentence on the model's stored channel selection and how to override it ("" if none)."""
    if spec is None or spec.channels is None:
        return ""
    selection, n = list(spec.channels), spec.source_channels
    if n is None:
        trained = (
            f"trained on channels {selection} of images with different channel counts, so it "
            "does not apply that selection by itself"
        )
    else:
        trained = (
            f"trained on channels {selection} of {n}-channel images and applies that selection "
            f"to {n}-channel images by itself"
        )
    return (
        f" The model was {trained}; for other images, select {spec.in_channels} channel(s) "
        "with channels=[...] in Python, --channels on the command line or the channels field "
        "of the Predict widget."
    )


def _channels_problem(
    axes: str, shape: tuple[int, ...], spec: ModelSpec | None, channels: Sequence[int] | None
) -> str | None:
    c = axes.find("C")
    wanted = None if spec is None else spec.in_channels
    if channels is None:
        channels = stored_channels(axes, shape, spec)
    if channels is not None:
        channels = list(channels)
        if c < 0:
            return None if channels == [0] else f"no C axis to select channels {channels} from"
        n = shape[c]
        bad = [k for k in channels if not 0 <= k < n]
        if bad:
            return f"channels {channels} selected but the C axis has {n} (0..{n - 1})"
        if wanted is not None and len(channels) != wanted:
            return f"{len(channels)} channel(s) selected, the model takes {wanted}"
        return None
    if c < 0:
        if wanted is not None and wanted != 1:
            return f"no C axis, the model takes {wanted} channels"
        return None
    n = shape[c]
    if wanted is not None and n != wanted:
        colour = " (RGB colour)" if n in (3, 4) and c == len(axes) - 1 else ""
        pick = " (select one with channels=[k], --channels k)" if wanted == 1 else ""
        return f"{n} channels{colour}, the model takes {wanted}{pick}"
    return None


def fit_problem(
    axes: str,
    shape: Sequence[int],
    model: Any = None,
    *,
    channels: Sequence[int] | None = None,
    labels_shape: Sequence[int] | None = None,
) -> str | None:
    """Why ``model`` cannot read an image of ``shape`` with layout ``axes`` (None: it can).

    Parameters
    ----------
    axes : str
        A complete layout (see :func:`parse_axes`).
    shape : sequence of int
        The image's shape.
    model : UNet, UNetConfig, ModelSpec or None
        None: only the layout itself is checked.
    channels : sequence of int, optional
        Channel selection.
    labels_shape : sequence of int, optional
        Training labels, which must have the image's shape without the C axis.
    """
    shape = tuple(int(n) for n in shape)
    spec = None if model is None else ModelSpec.of(model)
    if len(axes) != len(shape):
        return f"{len(axes)} letters for {len(shape)} axes"
    if spec is not None and spec.ndim == 3 and "Z" not in axes:
        return "no Z axis for a 3D model"
    problem = _channels_problem(axes, shape, spec, channels)
    if problem:
        return problem
    if labels_shape is not None:
        expected = tuple(n for a, n in zip(axes, shape, strict=True) if a != "C")
        if tuple(int(n) for n in labels_shape) != expected:
            return (
                f"the labels have shape {tuple(labels_shape)}, not the image's shape without "
                f"C {expected}"
            )
    return None


def _same_reading_key(axes: str, spec: ModelSpec | None) -> tuple:
    """Readings with equal keys run the same computation (iterated axes differ only in name)."""
    if spec is None:
        return (axes,)
    return (axes.find("C"), tuple(axes.find(a) for a in spec.spatial))


def describe_reading(axes: str, shape: Sequence[int], model: Any = None) -> str:
    """How a model reads a layout, e.g. ``"ZCYX: 3 channel(s), YX planes, one per Z (5)"``.

    Without a model: the axes' meanings and lengths, e.g. ``"ZYX (depth 5, height 40, width 50)"``.
    """
    shape = tuple(int(n) for n in shape)
    if model is None:
        sizes = ", ".join(f"{AXIS_NAMES[a]} {n}" for a, n in zip(axes, shape, strict=True))
        return f"{axes} ({sizes})"
    spatial = ModelSpec.of(model).spatial
    parts = []
    c = axes.find("C")
    if c >= 0:
        parts.append(f"{shape[c]} channel(s)")
    looped = [f"{a} ({n})" for a, n in zip(axes, shape, strict=True) if a not in spatial + "C"]
    unit = "planes" if len(spatial) == 2 else "volumes"
    parts.append(f"{spatial} {unit}" + (f", one per {' and '.join(looped)}" if looped else ""))
    return f"{axes}: {', '.join(parts)}"


def _readings_text(found: list[tuple[str, str | None]], shape, spec) -> str:
    return "; ".join(
        describe_reading(axes, shape, spec) if problem is None else f"{axes}: {problem}"
        for axes, problem in found
    )


def infer_axes(
    shape: Sequence[int],
    *,
    tiff_axes: str | None = None,
    rgb: bool | None = None,
    axis_labels: Sequence[Any] | None = None,
    model: Any = None,
    channels: Sequence[int] | None = None,
    labels_shape: Sequence[int] | None = None,
    name: str = "image",
) -> str:
    """The layout of an image from its metadata or shape, checked against a model.

    Parameters
    ----------
    shape : sequence of int
        The image's shape.
    tiff_axes : str, optional
        tifffile's series axes (``S`` reads as C; ``Q``, ``I`` and others are unknown).
    rgb : bool or None
        A napari layer's ``rgb``: True makes the last axis C, False rules out colour. None
        (a bare array): a last axis of at most 4 entries is read as channels (C), e.g. RGB.
    axis_labels : sequence, optional
        A napari layer's ``axis_labels``.
    model : UNet, UNetConfig, ModelSpec or None
        Readings the model cannot take are dropped; None keeps them all.
    channels : sequence of int, optional
        Channel selection, checked like the model's channel count. None: the model's stored
        selection where it applies (a C axis of as many channels as its training images had).
    labels_shape : sequence of int, optional
        For training: the labels' shape, the image's without C.
    name : str
        How to call the image in errors.

    Returns
    -------
    str
        The layout, e.g. ``"ZCYX"``. Readings that differ only in the name of an iterated axis
        (``ZYX`` and ``TYX`` for a 2D model) count as one; the first of them is returned.

    Raises
    ------
    AxesError
        If no reading fits (the message lists each with its problem), or several fits that the
        model would read differently (the message lists them all).

    Examples
    --------
    >>> infer_axes((3, 512, 512), model=ModelSpec(3, 2))
    'CYX'
    >>> infer_axes((3, 512, 512), model=ModelSpec(1, 3))
    'ZYX'
    >>> infer_axes((3, 512, 512), model=ModelSpec(1, 2))  # ZYX and TYX: same prediction
    'ZYX'
    >>> infer_axes((512, 512, 3), model=ModelSpec(3, 2))
    'YXC'
    """
    shape = tuple(int(n) for n in shape)
    spec = None if model is None else ModelSpec.of(model)
    candidates = readings(shape, tiff_axes=tiff_axes, rgb=rgb, axis_labels=axis_labels)
    if not candidates:
        raise AxesError(
            f"{name} has shape {shape}: {len(shape)} axes are more than T, Z, C, Y and X can "
            f"name; pick a part of it first"
        )
    found = [
        (
            axes,
            fit_problem(axes, shape, spec, channels=channels, labels_shape=labels_shape),
        )
        for axes in candidates
    ]
    fits = [axes for axes, problem in found if problem is None]
    groups = {_same_reading_key(axes, spec) for axes in fits}
    if len(groups) == 1:
        return fits[0]
    text = _readings_text(found, shape, spec)
    give = "give the axes explicitly (axes='...' in Python, --axes on the command line)"
    if not fits:
        expected = "" if spec is None else f", but the model expects {spec.describe()}"
        iterated = ""
        if spec is not None:
            iterated = (
                " (extra T or Z axes are predicted plane by plane)"
                if spec.ndim == 2
                else " (an extra T axis is predicted volume by volume)"
            )
        read = "Read as " if len(found) == 1 else "Readings considered: "
        note = _selection_note(spec) if channels is None else ""
        raise AxesError(
            f"{name} has shape {shape}{expected}{iterated}. {read}{text}. If another reading "
            f"is right, {give}" + (f".{note}" if note else ""),
            found,
        )
    raise AxesError(
        f"{name} has shape {shape}, and its axes are ambiguous"
        + ("" if spec is None else " for this model")
        + f". Readings considered: {text}. {give[0].upper()}{give[1:]}",
        found,
    )


# ----------------------------------------------------------------------------------------------
# Planning: which axes are iterated, channels, spatial axes, and lazy views


@dataclass(frozen=True)
class Layout:
    """How a model reads an image of a given layout.

    Build it with :func:`plan_layout` or :func:`choose_layout`.

    Attributes
    ----------
    axes : str
        The image's layout, e.g. ``"TZCYX"``.
    shape : tuple of int
        The image's shape.
    ndim : int
        The model's spatial axes (2 or 3).
    channels : tuple of int or None
        Selected channels of the C axis, in the order the model takes them; None: all.
    channels_from_model : bool
        ``channels`` is the model's stored selection, applied because the caller gave none
        (:func:`stored_channels`); only :meth:`describe` tells the difference.
    """

    axes: str
    shape: tuple[int, ...]
    ndim: int
    channels: tuple[int, ...] | None = None
    channels_from_model: bool = field(default=False, compare=False)

    @property
    def channel_axis(self) -> int | None:
        """Position of the C axis, or None."""
        c = self.axes.find("C")
        return None if c < 0 else c

    @property
    def spatial_letters(self) -> str:
        return "ZYX"[-self.ndim :]

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        """Positions of the model's spatial axes, in the model's order (Z, Y, X)."""
        return tuple(self.axes.index(a) for a in self.spatial_letters)

    @property
    def iter_axes(self) -> tuple[int, ...]:
        """Positions of the iterated axes (T; Z for a 2D model), in the image's order."""
        return tuple(
            i for i, a in enumerate(self.axes) if a != "C" and a not in self.spatial_letters
        )

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in self.spatial_axes)

    @property
    def iter_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in self.iter_axes)

    @property
    def n_frames(self) -> int:
        """Number of frames (planes or volumes) predicted one after the other."""
        return int(np.prod(self.iter_shape, dtype=np.int64))

    @property
    def in_channels(self) -> int:
        """Channels fed to the model."""
        if self.channels is not None:
            return len(self.channels)
        return 1 if self.channel_axis is None else self.shape[self.channel_axis]

    @property
    def output_axes(self) -> str:
        """The result's layout: the image's without C (a probability map adds a leading C)."""
        return self.axes.replace("C", "")

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(n for a, n in zip(self.axes, self.shape, strict=True) if a != "C")

    @property
    def is_plain(self) -> bool:
        """The image is what the engine takes as is: ``(C, *spatial)`` or ``(*spatial)``."""
        c = self.channel_axis
        order = ((c,) if c is not None else ()) + self.spatial_axes
        return order == tuple(range(len(self.axes))) and self.channels is None

    def frames(self) -> Iterator[tuple[int, ...]]:
        """Index of each frame along the iterated axes, in C order (``()`` once if none)."""
        return np.ndindex(*self.iter_shape)

    def frame_name(self, index: Sequence[int]) -> str:
        """E.g. ``"T=3, Z=0"`` (empty for an image without iterated axes)."""
        letters = [self.axes[i] for i in self.iter_axes]
        return ", ".join(f"{a}={int(k)}" for a, k in zip(letters, index, strict=True))

    def frame(self, image: Any, index: Sequence[int] = ()) -> Any:
        """One frame of ``image`` as a lazy ``(C, *spatial)`` array-like (C = ``in_channels``).

        Slicing it reads only that window of ``image``; a plain channels-first image is
        returned as is.
        """
        self._check_image(image)
        c = self.channel_axis
        if self.is_plain and c is not None:
            return image
        fixed = dict(zip(self.iter_axes, (int(k) for k in index), strict=True))
        order = ((c,) if c is not None else ()) + self.spatial_axes
        return AxesView(
            image, order, fixed, select=self.channels, channel_axis=c, new_axis=c is None
        )

    def job(self, image: Any) -> Any:
        """All of ``image`` as a lazy ``(C, *other axes in the image's order)`` array-like.

        What a normalisation is resolved on: percentiles over every frame, per channel.
        """
        self._check_image(image)
        c = self.channel_axis
        if self.is_plain and c is not None:
            return image
        rest = tuple(i for i in range(len(self.axes)) if i != c)
        order = ((c,) if c is not None else ()) + rest
        return AxesView(image, order, select=self.channels, channel_axis=c, new_axis=c is None)

    def frame_out(self, out: Any, index: Sequence[int] = (), lead: int = 0) -> Any:
        """The part of a result array ``out`` (``(*lead axes, *output_shape)``) for one frame.

        A lazy, writable ``(*lead axes, *spatial)`` view (``out`` itself when there is
        nothing to iterate or reorder).
        """
        non_c = [i for i, a in enumerate(self.axes) if a != "C"]
        position = {i: lead + k for k, i in enumerate(non_c)}
        order = tuple(range(lead)) + tuple(position[i] for i in self.spatial_axes)
        if not self.iter_axes and order == tuple(range(len(order))):
            return out
        fixed = {position[i]: int(k) for i, k in zip(self.iter_axes, index, strict=True)}
        return AxesView(out, order, fixed)

    def without_channels(self) -> Layout:
        """The layout of the labels (or result) of this image: the same without C."""
        return Layout(self.output_axes, self.output_shape, self.ndim)

    def _check_image(self, image: Any) -> None:
        if tuple(int(n) for n in image.shape) != self.shape:
            raise ValueError(f"image of shape {tuple(image.shape)} for a layout of {self.shape}")

    def describe(self) -> str:
        """E.g. ``"TZCYX: 2 channel(s), YX planes, one per T (4) and Z (30)"``."""
        spec = ModelSpec(self.in_channels, self.ndim)
        text = describe_reading(self.axes, self.shape, spec)
        if self.channels is not None:
            text += f", channels {list(self.channels)}"
            if self.channels_from_model:
                text += " (from the model)"
        return text


def plan_layout(
    shape: Sequence[int],
    axes: str,
    model: Any,
    *,
    channels: Sequence[int] | None = None,
    labels_shape: Sequence[int] | None = None,
    name: str = "image",
) -> Layout:
    """Check a layout against a model and plan how the model reads it.

    Parameters
    ----------
    shape : sequence of int
        The image's shape.
    axes : str
        Its layout (case-insensitive; see :func:`parse_axes`).
    model : UNet, UNetConfig or ModelSpec
        ``in_channels`` (None: any), ``ndim`` and (a UNet's metadata) the channel selection
        it was trained with.
    channels : sequence of int, optional
        Channels of the C axis to feed the model, in order (picks and reorders); their number
        must be the model's ``in_channels``. A single-channel model given a C axis of more than
        one channel needs one selected. None: the model's stored selection when the C axis has
        as many channels as its training images had (:meth:`ModelSpec.selection_for`), else
        all channels.
    labels_shape : sequence of int, optional
        For training: must be the image's shape without C.
    name : str
        How to call the image in errors.

    Raises
    ------
    AxesError
        If the layout is invalid or the model cannot read the image with it, naming the
        layout, the shape and what the model expects.
    """
    shape = tuple(int(n) for n in shape)
    spec = ModelSpec.of(model)
    letters = parse_axes(axes, len(shape), name=f"{name} (shape {shape})")
    if channels is not None:
        channels = tuple(operator.index(k) for k in channels)
    problem = fit_problem(letters, shape, spec, channels=channels, labels_shape=labels_shape)
    if problem:
        iterated = (
            "extra T or Z axes are predicted plane by plane"
            if spec.ndim == 2
            else "an extra T axis is predicted volume by volume"
        )
        note = _selection_note(spec) if channels is None else ""
        raise AxesError(
            f"{name} has shape {shape} and axes {letters}, but the model expects "
            f"{spec.describe()} ({iterated}): {problem}" + (f".{note}" if note else ""),
            [(letters, problem)],
        )
    if channels is not None and "C" not in letters:
        channels = None  # [0] of an image without channels
    elif channels is None and (stored := stored_channels(letters, shape, spec)) is not None:
        return Layout(letters, shape, spec.ndim, stored, channels_from_model=True)
    return Layout(letters, shape, spec.ndim, channels)


def choose_layout(
    shape: Sequence[int],
    model: Any,
    *,
    axes: str | None = None,
    channels: Sequence[int] | None = None,
    tiff_axes: str | None = None,
    rgb: bool | None = None,
    axis_labels: Sequence[Any] | None = None,
    labels_shape: Sequence[int] | None = None,
    name: str = "image",
) -> Layout:
    """The layout to use for an image: given, from metadata, plain, or inferred.

    1. ``axes`` given: that layout (:func:`plan_layout`).
    2. Metadata (``tiff_axes``, or ``axis_labels``/``rgb``) that name every axis: that
       layout.
    3. The model's plain layout (``YX``, ``ZYX``, ``CYX``, ``CZYX``) when the image has that
       many axes, the model can read it so, and the metadata do not contradict it: the
       engine's behaviour before layouts existed.
    4. Otherwise :func:`infer_axes`.

    Parameters are as for :func:`plan_layout` and :func:`infer_axes`.

    Raises
    ------
    AxesError
        As :func:`plan_layout` and :func:`infer_axes`.
    """
    shape = tuple(int(n) for n in shape)
    spec = ModelSpec.of(model)
    options = dict(channels=channels, labels_shape=labels_shape, name=name)
    if axes is not None:
        return plan_layout(shape, axes, spec, **options)
    hints = _hints(shape, tiff_axes, rgb, axis_labels)
    if tiff_axes is None and axis_labels is None and rgb is None:
        hints = [UNKNOWN * len(shape)]  # a bare array: any reading may be the plain one
    if len(hints) == 1 and UNKNOWN not in hints[0] and len(hints[0]) == len(shape):
        return plan_layout(shape, hints[0], spec, **options)
    plain = spec.plain_axes(len(shape))
    agrees = any(
        len(h) == len(plain) and all(a in (UNKNOWN, b) for a, b in zip(h, plain, strict=True))
        for h in hints
    )
    if (
        agrees
        and fit_problem(plain, shape, spec, channels=channels, labels_shape=labels_shape) is None
    ):
        return plan_layout(shape, plain, spec, **options)
    found = infer_axes(
        shape,
        tiff_axes=tiff_axes,
        rgb=rgb,
        axis_labels=axis_labels,
        model=spec,
        channels=channels,
        labels_shape=labels_shape,
        name=name,
    )
    return plan_layout(shape, found, spec, **options)


class AxesView:
    """A lazy view of an array-like: some axes fixed, the others reordered, channels selected.

    Reading ``view[key]`` reads only the matching window of the array (integers and slices
    only, so numpy, memmaps, zarr, dask and napari layer data all work); writing
    ``view[key] = value`` writes it there. Made by :class:`Layout`.

    Parameters
    ----------
    array : array-like
        The array viewed (``.array``).
    order : sequence of int
        Axes of ``array`` in the view's order; with ``fixed`` they must cover every axis.
    fixed : dict of int to int
        Axes of ``array`` held at one index.
    select : sequence of int, optional
        Indices taken along ``channel_axis``, in order (makes the view read-only).
    channel_axis : int, optional
        The axis of ``array`` that ``select`` applies to.
    new_axis : bool
        Add a leading axis of length 1 (the channel axis of a single-channel image;
        makes the view read-only).
    """

    def __init__(
        self,
        array: Any,
        order: Sequence[int],
        fixed: dict[int, int] | None = None,
        *,
        select: Sequence[int] | None = None,
        channel_axis: int | None = None,
        new_axis: bool = False,
    ):
        self.array = array
        self._order = tuple(int(a) for a in order)
        self._fixed = {int(a): int(i) for a, i in (fixed or {}).items()}
        base_ndim = len(array.shape)
        if sorted(self._order + tuple(self._fixed)) != list(range(base_ndim)):
            raise ValueError(
                f"axes {self._order} and fixed {sorted(self._fixed)} do not cover an array of "
                f"{base_ndim} axes exactly once"
            )
        self._channel_axis = channel_axis
        self._select = None if select is None else np.asarray(select, dtype=np.intp)
        self._new_axis = bool(new_axis)
        shape = [1] if new_axis else []
        for a in self._order:
            if a == channel_axis and self._select is not None:
                shape.append(len(self._select))
            else:
                shape.append(int(array.shape[a]))
        self.shape = tuple(shape)
        self.dtype = np.dtype(array.dtype)
        chunks = getattr(array, "chunks", None)
        self.chunks = None
        if isinstance(chunks, tuple) and all(isinstance(c, int | np.integer) for c in chunks):
            self.chunks = ((1,) if new_axis else ()) + tuple(int(chunks[a]) for a in self._order)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<AxesView {self.shape} {self.dtype} of {type(self.array).__name__}>"

    def _key(self, key: Any) -> tuple:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(j for j, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices ({len(key)}) for a view of {self.ndim} axes")
        key = tuple(k if isinstance(k, slice) else operator.index(k) for k in key)
        return key + (slice(None),) * (self.ndim - len(key))

    def _base(self, key: tuple) -> tuple[list, dict[int, np.ndarray]]:
        base: list[Any] = [slice(None)] * len(self.array.shape)
        for a, i in self._fixed.items():
            base[a] = i
        take: dict[int, np.ndarray] = {}
        for a, k in zip(self._order, key, strict=True):
            if a == self._channel_axis and self._select is not None:
                chosen = self._select[k]
                if chosen.ndim == 0:
                    base[a] = int(chosen)
                elif chosen.size == 0:
                    base[a] = slice(0, 0)
                else:
                    lo, hi = int(chosen.min()), int(chosen.max()) + 1
                    base[a] = slice(lo, hi)
                    take[a] = chosen - lo
            else:
                base[a] = k
        return base, take

    def _kept(self, base: list) -> tuple[list[int], list[int]]:
        """Axes of ``array`` left after indexing, in the array's and in the view's order."""
        kept = [a for a, k in enumerate(base) if isinstance(k, slice)]
        return kept, [a for a in self._order if a in kept]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = self._key(key)
        lead, key = (key[0], key[1:]) if self._new_axis else (None, key)
        base, take = self._base(key)
        data = np.asarray(self.array[tuple(base)])
        kept, view = self._kept(base)
        for a, idx in take.items():
            data = np.take(data, idx, axis=kept.index(a))
        perm = [kept.index(a) for a in view]
        if perm != sorted(perm):
            data = data.transpose(perm)
        if self._new_axis:
            data = data[None][lead]
        return data

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._select is not None or self._new_axis:
            raise TypeError("a view with selected or added channels is read-only")
        base, _ = self._base(self._key(key))
        kept, view = self._kept(base)
        value = np.asarray(value)
        if value.ndim == len(view):
            value = value.transpose([view.index(a) for a in kept])
        self.array[tuple(base)] = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[()]
        return data if dtype is None else data.astype(dtype, copy=False)


def parse_channels(text: str | None) -> list[int] | None:
    """``"2, 0"`` → ``[2, 0]``; empty or None → None (all channels).

    Raises
    ------
    ValueError
        If a part is not a whole number, saying what is expected.
    """
    if text is None or not text.strip():
        return None
    try:
        return [int(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"channels must be channel numbers separated by commas, e.g. 0 or 2,0,1; got {text!r}"
        ) from None
