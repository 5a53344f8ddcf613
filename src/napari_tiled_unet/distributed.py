"""Overlap-tile prediction on dask: the same tile plan and per-tile function, many machines.

:func:`predict_dask` returns a lazy ``dask.array.Array`` built, frame by frame of the image's
layout (:class:`~napari_tiled_unet.axes.Layout`, resolved as by
:func:`~napari_tiled_unet.inference.iter_predict`), from the plan of
:func:`~napari_tiled_unet.inference.iter_predict`: one task per batch of tiles reads each
tile's bounding box from the (dask) image, mirror-pads it with
:func:`~napari_tiled_unet.tiling.stitch.take_window` and runs
:func:`~napari_tiled_unet.forward.predict_batch`; the tiles' valid centres are assembled with
``dask.array.block``, the frames stacked in the result's axis order. The result equals the
local one exactly (same normalisation, tiles, batches and function). It computes on whatever
dask scheduler is active: the local threaded one, or a ``dask.distributed`` Client
(LocalCluster, a scheduler address, dask-jobqueue's SLURMCluster). The network travels once,
as its configuration and weights, and is rebuilt once per worker.

:func:`iter_predict_dask` runs a whole prediction (labels, probabilities or instances) that
way into an array on this machine, yielding Progress: what a job layer calls.

Needs the ``dask`` extra: ``pip install napari-tiled-unet[dask]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
import uuid
import warnings
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.events import Progress
from napari_tiled_unet.forward import check_precision, memory_format, predict_batch
from napari_tiled_unet.inference import (
    check_output_kind,
    image_layout,
    input_normalization,
    layout_output_spec,
    resolve_model,
)
from napari_tiled_unet.instances import iter_instances
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.planning import plan_with_warning
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


def _run_batch(
    payload: dict,
    tiles: Sequence[Tile],
    locals_: Sequence[Sequence[np.ndarray]],
    normalization: Normalization,
    output: str,
    device: str,
    name: str,
    precision: str,
    *blocks,
) -> tuple[np.ndarray, ...]:
    """One dask task: read a batch of tiles from their boxes, predict, crop each to its centre."""
    net, torch_device = _worker_model(payload, device)
    batch = np.stack([take_window(b, loc) for b, loc in zip(blocks, locals_, strict=True)])
    result = predict_batch(net, batch, tiles, normalization, output, torch_device, name, precision)
    return tuple(
        np.ascontiguousarray(r[(Ellipsis, *t.crop)]) for t, r in zip(tiles, result, strict=True)
    )


def _model_payload(net) -> dict:
    return {
        "key": uuid.uuid4().hex,
        "config": net.config.to_dict(),
        "state_dict": {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()},
    }


def predict_dask(
    image,
    model=None,
    *,
    axes: str | Layout | None = None,
    channels: Sequence[int] | None = None,
    tile_shape: Sequence[int] | None = None,
    halo: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    output: str = "labels",
    client=None,
    name: str = "image",
    precision: str = "float32",
) -> dask.array.Array:
    """Lazy overlap-tile prediction of ``image`` as a ``dask.array.Array``.

    Parameters
    ----------
    image : array-like or dask.array.Array
        Any layout :func:`~napari_tiled_unet.inference.iter_predict` takes (``axes``);
        numpy, memmap or zarr inputs are wrapped with ``dask.array.from_array``. Each task
        reads only its tiles' boxes of one frame.
    model : UNet or path-like, optional
        As for :func:`~napari_tiled_unet.inference.iter_predict` (None: the bundled model).
    axes, channels, tile_shape, halo, batch_size, name, precision
        As for :func:`~napari_tiled_unet.inference.iter_predict`: the same layout,
        normalisation, plan and batches, so the result equals
        :func:`~napari_tiled_unet.inference.predict`'s.
    device : {"auto", "cpu", "cuda", "mps"}
        Resolved on each worker ("auto": cuda, then mps, then cpu there).
    output : {"labels", "probabilities"}
        As for :func:`~napari_tiled_unet.inference.iter_predict`. For instances use
        :func:`iter_predict_dask`.
    client : distributed.Client, optional
        If given, the network's weights are scattered to all workers once; otherwise they
        are one task of the graph. Computing runs on the active scheduler either way.

    Returns
    -------
    dask.array.Array
        Shaped, typed and ordered as :func:`~napari_tiled_unet.inference.iter_predict`'s
        result (:func:`~napari_tiled_unet.inference.layout_output_spec`); chunked like the
        plan's write windows, one chunk per frame along iterated axes. A default tile larger
        than the memory budget is a UserWarning, as from
        :func:`~napari_tiled_unet.inference.plan_for`.
    """
    check_output_kind(output, ("labels", "probabilities"))
    net = resolve_model(model)
    layout = image_layout(image, net, axes=axes, channels=channels, name=name)
    array, _plan, warning = _graph(
        image,
        net,
        layout,
        output=output,
        tile_shape=tile_shape,
        halo=halo,
        batch_size=batch_size,
        device=device,
        client=client,
        name=name,
        precision=precision,
    )
    if warning:
        warnings.warn(warning, stacklevel=2)
    return array


def iter_predict_dask(
    image,
    model=None,
    out: Any = None,
    *,
    output: str = "labels",
    scratch_dir: str | os.PathLike | None = None,
    scratch_name: str = "classes",
    **options: Any,
) -> Generator[Progress, None, Any]:
    """:func:`~napari_tiled_unet.inference.iter_predict` with the tiles computed on dask.

    The result is computed block by block on the active scheduler (or ``client``'s cluster)
    and written into ``out`` on this machine (:func:`iter_store`), so ``out`` need not be
    reachable from the workers. Equal to :func:`~napari_tiled_unet.inference.predict`'s.

    Parameters
    ----------
    image, model
        As for :func:`~napari_tiled_unet.inference.iter_predict`.
    out : array-like, optional
        Where to write the result (shape: :func:`~napari_tiled_unet.inference.layout_output_spec`),
        e.g. the array of :func:`~napari_tiled_unet.io.store.create_output`; a new numpy
        array by default.
    output : {"labels", "probabilities", "instances"}
        "instances": the class map is computed on dask into a scratch zarr store (with
        ``out``) and labelled here frame by frame, block by block
        (:func:`~napari_tiled_unet.instances.iter_instances`, as the local engine does).
    scratch_dir, scratch_name
        Where the scratch class map of "instances" goes (None: the system's temporary
        folder), as for :func:`~napari_tiled_unet.instances.iter_instances`.
    **options
        The keywords of :func:`predict_dask` (``axes``, ``channels``, ``tile_shape``,
        ``halo``, ``batch_size``, ``device``, ``client``, ``name``, ``precision``).

    Yields
    ------
    Progress
        ``stage="predict"`` in blocks (one per tile and frame), first with ``done=0`` and
        the plan's memory warning, if any; for "instances" with ``out`` then
        ``stage="instances"`` events.

    Returns
    -------
    array-like
        ``out`` (or the new array) holding the result.
    """
    check_output_kind(output)
    net = resolve_model(model)
    axes, channels = options.pop("axes", None), options.pop("channels", None)
    layout = image_layout(
        image, net, axes=axes, channels=channels, name=options.get("name", "image")
    )
    if output == "instances":
        classes = functools.partial(_iter_graph, image, net, layout, output="labels", **options)
        scratch = dict(scratch_dir=scratch_dir, scratch_name=scratch_name)
        return (yield from iter_instances(layout, net.config.num_classes, classes, out, **scratch))
    return (yield from _iter_graph(image, net, layout, out, output=output, **options))


def _iter_graph(
    image, net: UNet, layout: Layout, out: Any = None, *, output: str, client=None, **options: Any
) -> Generator[Progress, None, Any]:
    """Labels or probabilities of every frame of ``layout`` on dask, stored into ``out``."""
    shape, dtype, _axes = layout_output_spec(net, layout, output)
    target = np.zeros(shape, dtype) if out is None else out
    if tuple(target.shape) != shape:
        raise UserInputError(
            f"out has shape {tuple(target.shape)}; expected {shape} for output={output!r}"
        )
    array, plan, warning = _graph(image, net, layout, output=output, client=client, **options)
    stream = iter_store(array, target, client)
    first = next(stream)
    message = f"{len(plan)} tiles of {plan.tile_shape} on dask"
    if layout.n_frames > 1:
        message = f"{layout.n_frames} frames of {message}"
    yield dataclasses.replace(first, message=f"{first.message}: {message}", warning=warning)
    return (yield from stream)


def _graph(
    image,
    net: UNet,
    layout: Layout,
    *,
    output: str,
    tile_shape: Sequence[int] | None = None,
    halo: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    client=None,
    name: str = "image",
    precision: str = "float32",
) -> tuple[dask.array.Array, TilePlan, str]:
    """The lazy result of the whole image, its tile plan and the plan's warning ("" if none)."""
    import dask
    import dask.array as da

    if batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
    check_precision(precision, device)  # "auto" is checked on the workers
    plan, warning = plan_with_warning(layout.spatial_shape, net, tile_shape, halo)
    normalization = input_normalization(net, layout, image)
    payload = _model_payload(net)
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


def _regular_blocks(array) -> tuple[Any, BlockGrid]:
    """``array`` with regular chunks (rechunked only if they are not) and their grid."""
    block = tuple(max(max(c, default=1), 1) for c in array.chunks)
    grid = BlockGrid(array.shape, block)
    regular = tuple(
        tuple(s.stop - s.start for (s,) in BlockGrid((n,), (b,)))
        for n, b in zip(array.shape, block, strict=True)
    )
    if tuple(tuple(int(n) for n in c) for c in array.chunks) != regular:
        array = array.rechunk(block)
    return array, grid


def iter_store(array, out, client=None) -> Generator[Progress, None, Any]:
    """Compute a chunked dask ``array`` block by block into ``out`` on this machine.

    With a ``client``, blocks are computed on the cluster as they are ready and written here,
    so ``out`` (a numpy array, memmap or the zarr array of
    :func:`~napari_tiled_unet.io.store.create_output`) need not be reachable from the workers.
    Yields Progress in blocks (a block grid of the array's chunks, which are made regular
    first if they are not); returns ``out``.
    """
    import dask

    array, grid = _regular_blocks(array)
    indices = list(grid.indices())
    yield Progress("predict", 0, len(indices), f"{len(indices)} blocks")
    if client is not None:
        from distributed import as_completed

        futures = client.compute([array.blocks[idx] for idx in indices])
        where = {f.key: grid.region(idx) for f, idx in zip(futures, indices, strict=True)}
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                out[where[future.key]] = future.result()
                future.release()
                yield Progress("predict", done, len(indices), f"block {done}/{len(indices)}")
        finally:
            client.cancel(futures)
        return out
    step = max(1, os.cpu_count() or 1)
    for start in range(0, len(indices), step):
        group = indices[start : start + step]
        for idx, block in zip(group, dask.compute(*(array.blocks[i] for i in group)), strict=True):
            out[grid.region(idx)] = block
        done = start + len(group)
        yield Progress("predict", done, len(indices), f"block {done}/{len(indices)}")
    return out


@contextlib.contextmanager
def connect(address: str) -> Iterator[Any]:
    """A ``distributed.Client``: on a new LocalCluster for ``"local"``, else the scheduler at ``address``.

    Raises
    ------
    UserInputError
        Without dask.distributed installed, or when the scheduler cannot be reached.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise UserInputError(
            "a dask scheduler needs dask.distributed: pip install 'napari-tiled-unet[dask]'"
        ) from err
    if address == "local":
        with LocalCluster(dashboard_address=None) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(address, timeout=30)
    except OSError as err:
        raise UserInputError(f"cannot reach the dask scheduler at {address}: {err}") from err
    with client:
        yield client
