"""Tile plans for a network: the default tile that fits the memory budget, and halo advice."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.model.memory import (
    TILE_MEMORY_BUDGET,
    format_bytes,
    tile_memory,
    voxel_budget,
)
from napari_tiled_unet.tiling.plan import TilePlan, default_tile_shape, plan_tiles

if TYPE_CHECKING:
    from napari_tiled_unet.model.unet import UNet

#: A suggested halo leaves default tiles that keep at least this share of their voxels as
#: output (half of each edge in 3D).
SUGGESTED_KEPT_SHARE = 0.125


def check_tiling_options(model: UNet, tile_shape: Any = None, batch_size: Any = 1) -> None:
    """Raise a UserInputError, saying what to pass, for a ``tile_shape`` or ``batch_size`` of
    the wrong kind: a tile shape is one positive integer per spatial axis of ``model`` (e.g.
    ``(256, 256)``), a batch size a positive integer or None (the default). Whether the network takes the tile
    size is :func:`plan_for`'s check."""
    ndim = model.config.ndim
    example = (256,) * ndim
    axes = "ZYX"[-ndim:]
    if tile_shape is not None:
        entries = _integer_entries(tile_shape)
        if entries is None or len(entries) != ndim or min(entries) < 1:
            raise UserInputError(
                f"tile_shape must be {ndim} positive integers, the network's input tile in "
                f"pixels along {', '.join(axes)}, e.g. tile_shape={example}; got {tile_shape!r}"
            )
    if batch_size is not None and (not _is_integer(batch_size) or batch_size < 1):
        raise UserInputError(
            f"batch_size must be a positive integer (tiles per forward pass), got {batch_size!r}"
        )


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _integer_entries(value: Any) -> tuple[int, ...] | None:
    """``value``'s entries as ints if it is a sequence (or 1-D array) of integers, else None."""
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim == 1 else None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        return None
    if not all(_is_integer(n) for n in value):
        return None
    return tuple(int(n) for n in value)


def plan_for(
    image_shape: Sequence[int],
    model: UNet,
    tile_shape: Sequence[int] | None = None,
    halo: int | None = None,
) -> TilePlan:
    """The tile plan :func:`~napari_tiled_unet.inference.iter_predict` would use for a spatial
    ``image_shape``.

    Without a ``tile_shape``, tiles are the largest (up to
    :data:`~napari_tiled_unet.tiling.plan.DEFAULT_TILE_EDGE`) whose forward pass fits
    :data:`~napari_tiled_unet.model.memory.TILE_MEMORY_BUDGET`. Where even the smallest tile
    that leaves output does not (an exact depth-4 3D network: 240³ voxels), that tile is used
    and a UserWarning says how much it needs and which ``halo`` would fit
    (:func:`suggest_halo`). ``halo``: see
    :meth:`~napari_tiled_unet.model.geometry.UNetGeometry.with_halo`.
    """
    plan, warning = plan_with_warning(image_shape, model, tile_shape, halo)
    if warning:
        warnings.warn(warning, stacklevel=2)
    return plan


def plan_with_warning(
    image_shape: Sequence[int],
    model: UNet,
    tile_shape: Sequence[int] | None,
    halo: int | None,
) -> tuple[TilePlan, str]:
    """:func:`plan_for`'s plan, and its warning as text ("" if none), for engines that carry
    the warning in a :class:`~napari_tiled_unet.events.Progress` event."""
    check_tiling_options(model, tile_shape)
    config = model.config
    geometry = model.geometry.with_halo(halo)
    warning = ""
    if tile_shape is None:
        tile_shape = default_tile_shape(geometry, config.ndim, voxel_budget(config))
        need = tile_memory(config, tile_shape)
        if need > TILE_MEMORY_BUDGET:
            suggestion = suggest_halo(model)
            if suggestion is None:
                helps = "a network with fewer levels or base channels needs less"
            else:
                cut, tile = suggestion
                helps = (
                    f"halo={cut} (--halo {cut}, or the Predict widget's halo) fits it with "
                    f"tiles of {tile}, approximate near tile borders (see the README)"
                )
            warning = (
                f"the smallest tile {tuple(tile_shape)} of this depth-{config.depth} "
                f"{config.ndim}D network ({geometry.describe()}) needs about "
                f"{format_bytes(need)} for its forward pass, more than the default "
                f"{format_bytes(TILE_MEMORY_BUDGET)}; {helps}"
            )
    return plan_tiles(tuple(image_shape), geometry, tile_shape), warning


def suggest_halo(model: UNet) -> tuple[int, tuple[int, ...]] | None:
    """The largest cut halo whose default tile fits the memory budget and keeps enough output.

    Returns ``(halo, tile_shape)``, with tiles that keep at least
    :data:`SUGGESTED_KEPT_SHARE` of their voxels, or None ('valid' networks, or no halo
    does). Used in the warning of :func:`plan_for`.
    """
    config = model.config
    if config.padding != "same":
        return None
    budget = voxel_budget(config)
    widest = max(before for before, _ in model.geometry.halos)
    for halo in range(widest - 1, -1, -1):
        geometry = model.geometry.with_halo(halo)
        if max(before for before, _ in geometry.halos) != halo:
            continue  # not a cut of its own: the next grid step down
        tile = default_tile_shape(geometry, config.ndim, budget)
        kept = math.prod(
            max(0, n - g.context_before - g.context_after)
            for n, g in zip(tile, geometry.axes, strict=True)
        )
        fits = tile_memory(config, tile) <= TILE_MEMORY_BUDGET
        if fits and kept >= SUGGESTED_KEPT_SHARE * math.prod(tile):
            return halo, tile
    return None
