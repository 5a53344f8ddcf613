"""Inferring a layout: readings of an image's metadata or shape, checked against a model."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from napari_tiled_unet.axes.letters import (
    AXES,
    AXIS_NAMES,
    MAX_CHANNELS_LAST,
    UNKNOWN,
    AxesError,
    axes_from_layer,
    axes_from_tiff,
)
from napari_tiled_unet.axes.spec import ModelSpec, selection_note, stored_channels

#: Letters tried for an unknown axis, most likely first.
_FILL_ORDER = "ZTC"


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


def layout_hints(
    shape: tuple[int, ...],
    tiff_axes: str | None,
    rgb: bool | None,
    axis_labels: Sequence[Any] | None,
) -> list[str]:
    """What the metadata (or, without any, the shape) say of each axis: hints with ``?``.

    ``tiff_axes`` wins over napari's ``axis_labels``/``rgb`` (see :func:`axes_from_tiff` and
    :func:`axes_from_layer`); a bare array gives ``?`` for every axis, or ``C`` last when the
    last axis is short (at most :data:`MAX_CHANNELS_LAST` entries).
    """
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
    for hint in layout_hints(shape, tiff_axes, rgb, axis_labels):
        if len(hint) != len(shape):
            raise AxesError(
                f"the metadata name {len(hint)} axes ({hint}) but the image has {len(shape)} "
                f"(shape {shape})"
            )
        found.extend(r for r in _fill(hint, shape) if r not in found)
    return found


# ----------------------------------------------------------------------------------------------
# Fitting a layout to a model


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
        note = selection_note(spec) if channels is None else ""
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
