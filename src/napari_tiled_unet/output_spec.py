"""Shape, dtype and axis letters of a prediction's result, from the model and the layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.forward import labels_dtype

if TYPE_CHECKING:
    from napari_tiled_unet.axes import Layout
    from napari_tiled_unet.model.unet import UNet

OUTPUTS = ("labels", "probabilities", "instances")


def output_spec(
    model: UNet, spatial: Sequence[int], output: str = "labels"
) -> tuple[tuple[int, ...], np.dtype, str]:
    """Shape, dtype and axis letters of :func:`~napari_tiled_unet.inference.iter_predict`'s result for a spatial shape."""
    spatial = tuple(int(n) for n in spatial)
    letters = "ZYX"[-len(spatial) :]
    if output == "labels":
        return spatial, labels_dtype(model.config.num_classes), letters
    if output == "instances":
        return spatial, np.dtype(np.int32), letters
    if output == "probabilities":
        return (model.config.num_classes, *spatial), np.dtype(np.float32), "C" + letters
    raise UserInputError(f"output must be one of {OUTPUTS}, got {output!r}")


def layout_output_spec(
    model: UNet, layout: Layout, output: str = "labels"
) -> tuple[tuple[int, ...], np.dtype, str]:
    """Shape, dtype and axis letters of :func:`~napari_tiled_unet.inference.iter_predict`'s result for an image layout.

    The image's shape and axes without C (``"TZYX"`` for a ``"TZCYX"`` image); probabilities
    add a leading class axis, lettered ``C``.
    """
    _shape, dtype, _letters = output_spec(model, layout.spatial_shape, output)
    if output == "probabilities":
        return (model.config.num_classes, *layout.output_shape), dtype, "C" + layout.output_axes
    return layout.output_shape, dtype, layout.output_axes
