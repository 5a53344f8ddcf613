"""How much work a tile plan does, and the warning for a requested tile that multiplies it.

Each tile reads its network input (its output plus the context on every side); with a small
tile most of that input is context. ``predict nuclei.tif --tile 256`` plans 608 tiles that read
about 25 times the image, 25–40× slower than the one automatic tile. :func:`small_tile_warning`
says so before the work starts; :func:`iter_with_warning` carries it on the job's first
:class:`~napari_tiled_unet.events.Progress` event, the path the engine's memory-budget warning
takes, so the command line prints it and the napari widgets show it as a notification.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from napari_tiled_unet.events import Progress
    from napari_tiled_unet.model.unet import UNet
    from napari_tiled_unet.tiling.plan import TilePlan

R = TypeVar("R")

#: A requested tile whose plan reads more than this many times the image's pixels is warned
#: about (when the automatic tile reads fewer).
MAX_WORK_MULTIPLE = 3.0


def planned_work(plan: TilePlan) -> float:
    """Pixels the plan's tiles read (network inputs, context and mirror padding included) per
    pixel of the image: 1.0 would be no overlap at all."""
    return len(plan) * math.prod(plan.tile_shape) / math.prod(plan.image_shape)


def small_tile_warning(
    image_shape: Sequence[int],
    model: UNet,
    tile_shape: Sequence[int] | None,
    halo: int | None = None,
) -> str:
    """A warning ("" if none) for a requested ``tile_shape`` whose plan reads more than
    :data:`MAX_WORK_MULTIPLE` times the image when the automatic tile (the largest that fits
    the memory budget) reads fewer pixels.

    Parameters
    ----------
    image_shape : sequence of int
        Spatial shape of the image (one frame).
    model : UNet
        The network.
    tile_shape : sequence of int or None
        The requested network input tile; None (the automatic tile) never warns.
    halo : int, optional
        As for :func:`~napari_tiled_unet.planning.plan_for`.
    """
    if tile_shape is None:
        return ""
    from napari_tiled_unet.planning import plan_with_warning

    plan, _ = plan_with_warning(image_shape, model, tile_shape, halo)
    work = planned_work(plan)
    if work <= MAX_WORK_MULTIPLE:
        return ""
    automatic, _ = plan_with_warning(image_shape, model, None, halo)
    if planned_work(automatic) >= work:
        return ""
    tiles = f"{len(plan)} tile" + ("s" if len(plan) > 1 else "")
    auto_work = planned_work(automatic)
    return (
        f"tiles of {_shape(plan.tile_shape)} px read {work:.1f}× the image's pixels: {tiles}, "
        f"each writing {_shape(plan.stride)} px of the {_shape(plan.tile_shape)} px it reads "
        f"(the rest is context the network needs), about {work / auto_work:.0f}× the work of "
        f"the automatic tile {_shape(automatic.tile_shape)} ({len(automatic)} tile(s), "
        f"{auto_work:.1f}×), which fits the memory budget; leave the tile size unset (no "
        f"--tile; 0 in the Predict widget) unless memory is short"
    )


def _shape(shape: Sequence[int]) -> str:
    return "×".join(str(n) for n in shape)


def iter_with_warning(
    events: Generator[Progress, None, R], warning: str
) -> Generator[Progress, None, R]:
    """``events`` with ``warning`` added to the first event's (joined with "; "); the result
    and closing (cancel) pass through."""
    if not warning:
        return (yield from events)
    try:
        try:
            first = next(events)
        except StopIteration as stop:
            return stop.value
        joined = "; ".join(w for w in (first.warning, warning) if w)
        yield dataclasses.replace(first, warning=joined)
        return (yield from events)
    finally:
        events.close()
