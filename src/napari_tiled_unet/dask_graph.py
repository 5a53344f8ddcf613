"""The lazy dask graph of a prediction, and the tasks its workers run.

:func:`build_graph` turns an image's layout and tile plan into a lazy ``dask.array.Array``:
per frame, one task per batch of tiles reads each tile's bounding box from the (dask) image,
mirror-pads it (:func:`~napari_tiled_unet.tiling.stitch.take_window`) and runs
:func:`predict_tiles`; the valid centres are assembled with ``dask.array.block`` and the
frames stacked in the result's axis order. :func:`predict_tiles` (the shared per-tile
function :func:`~napari_tiled_unet.forward.predict_written` on a network rebuilt once per
worker from :func:`model_payload`) is also the task that
:func:`~napari_tiled_unet.distributed.iter_predict_dask` submits with tiles it read itself.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.device import check_one_device
from napari_tiled_unet.forward import check_precision, memory_format, predict_written
from napari_tiled_unet.inference import input_normalization, layout_output_spec
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.planning import check_tiling_options, plan_with_warning
from napari_tiled_unet.tiling.grid import BlockGrid
from napari_tiled_unet.tiling.plan import Tile, TilePlan
from napari_tiled_unet.tiling.stitch import take_window, tile_window

if TYPE_CHECKING:
    import dask.array

    from napari_tiled_unet.axes import Layout
    from napari_tiled_unet.model.unet import UNet

_CACHE: dict[tuple[str, str], Any] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 2


def _worker_model(payload: dict, device: str):
    """The network of ``payload`` on ``device``, built once per process (a small cache)."""
    from napari_tiled_unet.config import UNetConfig
    from napari_tiled_unet.device import resolve_device
    from napari_tiled_unet.model.unet import UNet

    key = (payload["key"], device)
    with _CACHE_LOCK:
        if key not in _CACHE:
            torch_device = resolve_device(device)
            net = UNet.from_config(UNetConfig(**payload["config"]))
            net.load_state_dict(payload["state_dict"])
            while len(_CACHE) >= _CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            layout = memory_format(net.config.ndim)
            _CACHE[key] = (net.eval().to(torch_device, memory_format=layout), torch_device)
        return _CACHE[key]


def predict_tiles(
    payload: dict,
    batch: np.ndarray,
    tiles: Sequence[Tile],
    normalization: Normalization,
    output: str,
    device: str,
    name: str,
    precision: str,
) -> tuple[np.ndarray, ...]:
    """One task on a worker: predict a batch of tiles, crop each to its valid centre.

    Parameters
    ----------
    payload : dict
        :func:`model_payload` of the network (a scattered future of it, resolved by dask);
        the network is rebuilt once per worker process and device.
    batch : ndarray, shape (B, C, *tile_shape)
        The tiles as :func:`~napari_tiled_unet.tiling.stitch.read_tile` reads them.
    tiles, normalization, output, name, precision
        As for :func:`~napari_tiled_unet.forward.predict_written`.
    device : str
        Resolved on the worker ("auto": cuda, then mps, then cpu there).

    Returns
    -------
    tuple of ndarray
        Per tile its valid centre: class ids ``(*write_shape)`` or probabilities
        ``(num_classes, *write_shape)``.
    """
    net, torch_device = _worker_model(payload, device)
    args = (normalization, output, torch_device, name, precision)
    return tuple(np.ascontiguousarray(r) for r in predict_written(net, batch, tiles, *args))


def _run_batch(payload, tiles, locals_, normalization, output, device, name, precision, *blocks):
    """One task of the lazy graph: the batch from its tiles' boxes, then :func:`predict_tiles`."""
    batch = np.stack([take_window(b, loc) for b, loc in zip(blocks, locals_, strict=True)])
    args = (normalization, output, device, name, precision)
    return predict_tiles(payload, batch, tiles, *args)


def model_payload(net: UNet) -> dict:
    """What workers rebuild the network from: its configuration and weights, under a new key."""
    return {
        "key": uuid.uuid4().hex,
        "config": net.config.to_dict(),
        "state_dict": {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()},
    }


def build_graph(
    image,
    net: UNet,
    layout: Layout,
    *,
    output: str,
    tile_shape: Sequence[int] | None = None,
    halo: int | None = None,
    batch_size: int | None = 1,
    device: str = "auto",
    client=None,
    name: str = "image",
    precision: str = "float32",
) -> tuple[dask.array.Array, TilePlan, str]:
    """The lazy result of the whole image, its tile plan and the plan's warning ("" if none).

    Parameters
    ----------
    image : array-like or dask.array.Array
        Read by the tasks, box by box (other arrays are wrapped with ``dask.array.from_array``:
        on a ``dask.distributed`` cluster they travel inside the graph, so they must pickle).
    net, layout
        The network and how it reads ``image``
        (:func:`~napari_tiled_unet.inference.image_layout`).
    output : {"labels", "probabilities"}
        What the tasks return.
    tile_shape, halo, batch_size, device, name, precision
        As for :func:`~napari_tiled_unet.inference.iter_predict`.
    client : distributed.Client, optional
        Scatter the network's weights to its workers once, instead of one graph task.

    Returns
    -------
    tuple
        ``(array, plan, warning)``: the result shaped, typed and ordered as
        :func:`~napari_tiled_unet.inference.layout_output_spec` says, chunked like the plan's
        write windows (one chunk per frame along iterated axes).
    """
    import dask
    import dask.array as da

    check_tiling_options(net, tile_shape, batch_size)
    check_one_device(device)
    batch_size = batch_size or 1  # None: the default; a GPU's free memory is the worker's
    check_precision(precision, device)  # "auto" is checked on the workers
    plan, warning = plan_with_warning(layout.spatial_shape, net, tile_shape, halo)
    normalization = input_normalization(net, layout, image)
    payload = model_payload(net)
    if client is not None:
        # A list: scattering a dict would scatter its values under the dict's keys.
        [payload] = client.scatter([payload], broadcast=True, hash=False)
    else:
        payload = dask.delayed(payload, pure=False, traverse=False)
    source = image if isinstance(image, da.Array) else da.from_array(image)
    _shape, dtype, _axes = layout_output_spec(net, layout, output)
    lead = (net.config.num_classes,) if output == "probabilities" else ()
    task = functools.partial(
        _frame_graph,
        plan=plan,
        payload=payload,
        normalization=normalization,
        output=output,
        device=device,
        precision=precision,
        batch_size=batch_size,
        lead=lead,
        dtype=dtype,
    )
    frames = []
    for index in layout.frames():
        where = layout.frame_name(index)
        frame = _frame_array(source, layout, index)
        frames.append(task(frame, name=f"{name} at {where}" if where else name))
    result = _stack(frames, layout.iter_shape)  # (*iterated, *lead, *spatial)
    n_iter, n_lead = len(layout.iter_axes), len(lead)
    position = {a: k for k, a in enumerate(layout.iter_axes)}
    position.update({a: n_iter + n_lead + k for k, a in enumerate(layout.spatial_axes)})
    order = [n_iter + k for k in range(n_lead)]
    order += [position[i] for i, letter in enumerate(layout.axes) if letter != "C"]
    if order != sorted(order):
        result = result.transpose(order)
    return result, plan, warning


def _frame_array(source: dask.array.Array, layout: Layout, index: Sequence[int]):
    """One frame of a dask image as a lazy ``(C, *spatial)`` dask array.

    The dask form of :meth:`~napari_tiled_unet.axes.Layout.frame` (whose view would compute
    the dask image window by window inside the tasks): iterated axes fixed at ``index``,
    channel and spatial axes in the model's order, channels selected.
    """
    fixed = dict(zip(layout.iter_axes, (int(k) for k in index), strict=True))
    frame = source[tuple(fixed.get(a, slice(None)) for a in range(source.ndim))]
    kept = [a for a in range(source.ndim) if a not in fixed]
    c = layout.channel_axis
    order = ((c,) if c is not None else ()) + layout.spatial_axes
    frame = frame.transpose([kept.index(a) for a in order])
    if c is None:
        return frame[None]
    if layout.channels is not None:
        frame = frame[list(layout.channels)]
    return frame


def _frame_graph(
    frame,
    *,
    plan: TilePlan,
    payload,
    normalization: Normalization,
    output: str,
    device: str,
    name: str,
    precision: str,
    batch_size: int,
    lead: tuple[int, ...],
    dtype: np.dtype,
):
    """One frame ``(C, *spatial)`` predicted lazily: one task per batch of the plan's tiles."""
    import dask
    import dask.array as da

    spatial = tuple(frame.shape[1:])
    pieces = []
    for i in range(0, len(plan), batch_size):
        tiles = plan.tiles[i : i + batch_size]
        windows = [tile_window(t, spatial) for t in tiles]
        blocks = [frame[(slice(None), *box)] for box, _ in windows]
        task = dask.delayed(_run_batch, pure=True, nout=len(tiles))(
            payload,
            tiles,
            [loc for _, loc in windows],
            normalization,
            output,
            device,
            name,
            precision,
            *blocks,
        )
        for tile, part in zip(tiles, task, strict=True):
            shape = (*lead, *(s.stop - s.start for s in tile.write))
            pieces.append(da.from_delayed(part, shape, dtype))
    # The plan's write windows are the blocks of this grid, in the same (C) order.
    grid = BlockGrid(spatial, plan.stride)
    return da.block(_nest(pieces, grid.counts))


def _nest(items: list, counts: Sequence[int]) -> list:
    """Row-major flat list → nested lists of the given per-axis counts (for ``da.block``)."""
    if len(counts) == 1:
        return list(items)
    step = len(items) // counts[0]
    return [_nest(items[i * step : (i + 1) * step], counts[1:]) for i in range(counts[0])]


def _stack(frames: list, shape: Sequence[int]):
    """Row-major flat list of dask arrays → one array with leading axes ``shape``."""
    import dask.array as da

    if not shape:
        return frames[0]
    step = len(frames) // shape[0]
    return da.stack([_stack(frames[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])])
