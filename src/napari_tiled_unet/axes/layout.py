"""Planning: which axes are iterated, channels, spatial axes, and lazy views (:class:`Layout`)."""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_tiled_unet.axes.infer import (
    describe_reading,
    fit_problem,
    infer_axes,
    layout_hints,
)
from napari_tiled_unet.axes.letters import UNKNOWN, AxesError, parse_axes
from napari_tiled_unet.axes.spec import ModelSpec, selection_note, stored_channels
from napari_tiled_unet.axes.view import AxesView
from napari_tiled_unet.errors import UserInputError


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
            raise UserInputError(
                f"image of shape {tuple(image.shape)} for a layout of {self.shape}"
            )

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
        note = selection_note(spec) if channels is None else ""
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
    hints = layout_hints(shape, tiff_axes, rgb, axis_labels)
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
