"""Between napari layers and engine arrays: which data to read, how to name axes, result layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_tiled_unet.errors import UserInputError


def layer_data(layer) -> Any:
    """The full-resolution array of an image or labels layer (level 0 of a multiscale layer)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def describe_axes(layer) -> str:
    """Name a layer's axes, e.g. ``"3 axes: z, y, x"`` or ``"3 axes: -2, -1, RGB"``.

    Axis names are the layer's ``axis_labels`` (napari >= 0.6) or its axis numbers; an RGB(A)
    layer gets a trailing ``RGB``/``RGBA`` axis.
    """
    labels = getattr(layer, "axis_labels", None)
    names = [str(a) for a in labels] if labels is not None else [str(i) for i in range(layer.ndim)]
    if getattr(layer, "rgb", False):
        names.append("RGBA" if layer_data(layer).shape[-1] == 4 else "RGB")
    return f"{len(names)} axes: {', '.join(names)}"


def engine_name(layer) -> str:
    """How the engine should call a layer in error messages: its name and its axes."""
    return f"layer {layer.name!r} ({describe_axes(layer)})"


def result_layer_kwargs(
    source,
    result_shape: tuple[int, ...],
    leading: str | None = None,
    dims: Sequence[int] | None = None,
) -> dict:
    """Keyword arguments that place a result array on top of its ``source`` layer.

    The result's axes (after ``leading``) are the source's dims ``dims`` (default: its
    trailing ones) and take their ``scale``, ``translate``, ``axis_labels`` and ``units``.
    An extra leading axis (e.g. classes of a probability map) is named ``leading`` and gets
    scale 1 and translate 0.

    Parameters
    ----------
    source : napari.layers.Layer
        The layer the result was computed from.
    result_shape : tuple of int
        Shape of the result array.
    leading : str, optional
        Name of one leading non-spatial axis in the result, if there is one.
    dims : sequence of int, optional
        The source dims the result's other axes correspond to, e.g. all but a channel axis.
    """
    spatial = len(result_shape) - (1 if leading is not None else 0)
    dims = list(range(source.ndim - spatial, source.ndim)) if dims is None else list(dims)
    if spatial > source.ndim or len(dims) != spatial:
        raise UserInputError(
            f"result of shape {result_shape} does not match the dims {dims} of layer "
            f"{source.name!r} ({source.ndim} dims)"
        )
    extra = [] if leading is None else [leading]

    def pick(values) -> list:
        return [tuple(values)[d] for d in dims]

    kwargs: dict[str, Any] = {
        "scale": [1.0] * len(extra) + pick(np.asarray(source.scale)),
        "translate": [0.0] * len(extra) + pick(np.asarray(source.translate)),
    }
    labels = getattr(source, "axis_labels", None)
    if labels is not None:
        kwargs["axis_labels"] = (*extra, *pick(labels))
    units = getattr(source, "units", None)
    if units is not None:
        kwargs["units"] = (*(["pixel"] * len(extra)), *pick(units))
    return kwargs
