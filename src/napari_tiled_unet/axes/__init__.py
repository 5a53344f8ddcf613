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
The package's modules, one job each (import from ``napari_tiled_unet.axes``):

- :mod:`~napari_tiled_unet.axes.letters`: the axis letters, layout strings, metadata hints,
  channel lists and :class:`AxesError`;
- :mod:`~napari_tiled_unet.axes.spec`: :class:`ModelSpec`, what a model takes, and the channel
  selection a model file stores;
- :mod:`~napari_tiled_unet.axes.infer`: readings, :func:`fit_problem` and :func:`infer_axes`;
- :mod:`~napari_tiled_unet.axes.layout`: :class:`Layout`, :func:`plan_layout` and
  :func:`choose_layout`;
- :mod:`~napari_tiled_unet.axes.view`: :class:`AxesView`, the lazy view.
"""

from __future__ import annotations

from napari_tiled_unet.axes.infer import (
    describe_reading,
    fit_problem,
    infer_axes,
    layout_hints,
    readings,
)
from napari_tiled_unet.axes.layout import Layout, choose_layout, plan_layout
from napari_tiled_unet.axes.letters import (
    AXES,
    AXIS_NAMES,
    LABEL_NAMES,
    MAX_CHANNELS_LAST,
    TIFF_LETTERS,
    UNKNOWN,
    AxesError,
    axes_from_layer,
    axes_from_tiff,
    parse_axes,
    parse_channels,
)
from napari_tiled_unet.axes.spec import (
    ModelSpec,
    selection_note,
    stored_channels,
)
from napari_tiled_unet.axes.view import AxesView

__all__ = [
    "AXES",
    "AXIS_NAMES",
    "LABEL_NAMES",
    "MAX_CHANNELS_LAST",
    "TIFF_LETTERS",
    "UNKNOWN",
    "AxesError",
    "AxesView",
    "Layout",
    "ModelSpec",
    "axes_from_layer",
    "axes_from_tiff",
    "choose_layout",
    "describe_reading",
    "fit_problem",
    "infer_axes",
    "layout_hints",
    "parse_axes",
    "parse_channels",
    "plan_layout",
    "readings",
    "selection_note",
    "stored_channels",
]
