"""Overlap-tile prediction on dask: the same tile plan and per-tile function, many machines.

:func:`iter_predict_dask` runs a whole prediction (labels, probabilities or instances) on a
``dask.distributed`` cluster into an array on this machine, yielding Progress: what a job
layer calls. The tiles are read here, as the local loop reads them, and travel to the workers
with their tasks; the results come back here. So the workers need not see the image's file,
no open file (a TIFF read through tifffile's zarr store) has to be pickled, and at most two
batches per worker thread are in flight: memory is bounded by the tile, not the image.

:func:`predict_dask` returns the lazy ``dask.array.Array`` of a prediction
(:func:`~napari_tiled_unet.dask_graph.build_graph`: per frame of the image's layout, one task
per batch of tiles of :func:`~napari_tiled_unet.inference.iter_predict`'s plan, reading the
tiles' boxes from the image). It computes on whatever dask scheduler is active: the local
threaded one, or a ``dask.distributed`` Client (LocalCluster, a scheduler address,
dask-jobqueue's SLURMCluster) whose workers can read the image (a numpy or dask array, a zarr
store they reach). The network travels once, as its configuration and weights, and is rebuilt
once per worker. Either way the result equals the local one (same normalisation, tiles,
batches and per-tile function).

Needs the ``dask`` extra: ``pip install napari-tiled-unet[dask]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import warnings
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.dask_graph import build_graph, model_payload, predict_tiles
from napari_tiled_unet.device import check_one_device
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.events import Progress
from napari_tiled_unet.forward import check_precision
from napari_tiled_unet.inference import (
    check_output_kind,
    image_layout,
    input_normalization,
    layout_output_spec,
    resolve_model,
)
from napari_tiled_unet.instances import iter_model_instances
from napari_tiled_unet.io.mapped import release_mapped_pages
from napari_tiled_unet.planning import check_tiling_options, plan_with_warning
from napari_tiled_unet.tiling.grid import BlockGrid
from napari_tiled_unet.tiling.stitch import read_tile

if TYPE_CHECKING:
    import dask.array

    from napari_tiled_unet.axes import Layout
    from napari_tiled_unet.model.unet import UNet
    from napari_tiled_unet.tiling.plan import TilePlan


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
        are one task of the graph. Computing runs on the active scheduler either way; on a
        ``dask.distributed`` one, the workers read ``image`` themselves, so it must pickle
        (numpy, dask, zarr on a path they reach): a TIFF opened with
        :func:`~napari_tiled_unet.io.tiff.open_tiff` does not, use :func:`iter_predict_dask`.

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
    check_tiling_options(net, tile_shape, batch_size)
    if client is not None or _active_client() is not None:
        _check_picklable(image, name)
    array, _plan, warning = build_graph(
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

    On a ``dask.distributed`` cluster (``client``, or the active scheduler's Client) each
    batch of tiles is read here and sent to a worker with its task, at most two batches per
    worker thread at a time, and the results are written into ``out`` here: neither the
    image's file nor ``out`` need be reachable from the workers. On a local scheduler
    (threads) :func:`predict_dask`'s graph is computed block by block into ``out``
    (:func:`iter_store`). Equal to :func:`~napari_tiled_unet.inference.predict`'s.

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
        ``stage="predict"`` in tiles over all frames (in blocks, one per tile and frame, on
        a local scheduler), first with ``done=0`` and the plan's memory warning, if any; for
        "instances" then ``stage="instances"`` events (per block).

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
    check_tiling_options(net, options.get("tile_shape"), options.get("batch_size", 1))
    check_one_device(options.get("device", "auto"))
    options["batch_size"] = options.get("batch_size") or 1  # None: the default, 1 on dask
    client = options.pop("client", None)
    client = _active_client() if client is None else client
    run = _iter_graph if client is None else functools.partial(_iter_cluster, client=client)
    if output == "instances":
        classes = functools.partial(run, image, net, layout, output="labels", **options)
        scratch = dict(scratch_dir=scratch_dir, scratch_name=scratch_name)
        return (yield from iter_model_instances(layout, net, classes, out, **scratch))
    return (yield from run(image, net, layout, out, output=output, **options))


def _active_client():
    """The ``distributed.Client`` that dask computes on now (e.g. a default Client), or None."""
    import sys

    if "distributed" not in sys.modules:
        return None
    from dask.base import get_scheduler
    from distributed import Client

    owner = getattr(get_scheduler(), "__self__", None)
    return owner if isinstance(owner, Client) else None


def _check_picklable(image, name: str) -> None:
    """Raise a UserInputError if ``image`` cannot travel to dask workers inside a graph."""
    import dask.array as da

    if isinstance(image, np.ndarray | da.Array):
        return
    from distributed.protocol.pickle import dumps

    try:
        dumps(image)
    except Exception as err:
        raise UserInputError(
            f"{name} ({type(image).__name__}) cannot be sent to dask workers ({err}); use "
            "iter_predict_dask(..., client=client), which reads the tiles here, or pass a "
            "dask array the workers can read"
        ) from None


def _target(net: UNet, layout: Layout, out: Any, output: str) -> Any:
    """``out``, checked against the result's shape, or a new numpy array for it."""
    shape, dtype, _axes = layout_output_spec(net, layout, output)
    target = np.zeros(shape, dtype) if out is None else out
    if tuple(target.shape) != shape:
        raise UserInputError(
            f"out has shape {tuple(target.shape)}; expected {shape} for output={output!r}"
        )
    return target


def _describe(plan: TilePlan, layout: Layout) -> str:
    message = f"{len(plan)} tiles of {plan.tile_shape} on dask"
    return f"{layout.n_frames} frames of {message}" if layout.n_frames > 1 else message


def _iter_cluster(
    image,
    net: UNet,
    layout: Layout,
    out: Any = None,
    *,
    output: str,
    client,
    tile_shape: Sequence[int] | None = None,
    halo: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    name: str = "image",
    precision: str = "float32",
) -> Generator[Progress, None, Any]:
    """Labels or probabilities of every frame on ``client``'s cluster, stored into ``out``.

    Tiles are read here (the local loop's reads) and scattered to the workers with their
    task; normalisation is resolved here too, from ``image`` itself.
    """
    from distributed import wait

    check_precision(precision, device)  # "auto" is checked on the workers
    plan, warning = plan_with_warning(layout.spatial_shape, net, tile_shape, halo)
    target = _target(net, layout, out, output)
    normalization = input_normalization(net, layout, image)
    [payload] = client.scatter([model_payload(net)], broadcast=True, hash=False)
    starts = range(0, len(plan), batch_size)  # batches sliced as they go: plans are lazy
    work = ((index, plan.tiles[i : i + batch_size]) for index in layout.frames() for i in starts)
    total, done, lead = layout.n_frames * len(plan), 0, int(output == "probabilities")
    yield Progress("predict", 0, total, _describe(plan, layout), warning=warning)
    pending: dict[Any, tuple] = {}  # task future -> (frame index, tiles, scattered batch)
    try:
        while True:
            # Asked each time: an adaptive cluster (dask-jobqueue) may start with no workers.
            limit = max(2, 2 * sum(client.nthreads().values()))
            for index, tiles in itertools.islice(work, max(0, limit - len(pending))):
                source = layout.frame(image, index)
                batch = np.stack([read_tile(source, t) for t in tiles])
                release_mapped_pages(source)
                where = layout.frame_name(index)
                data = client.scatter(batch, hash=False)
                args = (normalization, output, device, f"{name} at {where}" if where else name)
                task = client.submit(
                    predict_tiles, payload, data, tiles, *args, precision, pure=False
                )
                pending[task] = (index, tiles, data)
            if not pending:
                return target
            for task in wait(list(pending), return_when="FIRST_COMPLETED").done:
                index, tiles, _data = pending.pop(task)
                frame_out = layout.frame_out(target, index, lead=lead)
                for tile, part in zip(tiles, task.result(), strict=True):
                    frame_out[(Ellipsis, *tile.write)] = part
                done += len(tiles)
                yield Progress("predict", done, total, f"tile {done}/{total}")
    finally:
        client.cancel(list(pending))


def _iter_graph(
    image, net: UNet, layout: Layout, out: Any = None, *, output: str, **options: Any
) -> Generator[Progress, None, Any]:
    """Labels or probabilities of every frame on the local dask scheduler, into ``out``."""
    target = _target(net, layout, out, output)
    array, plan, warning = build_graph(image, net, layout, output=output, **options)
    stream = iter_store(array, target)
    first = next(stream)
    message = f"{first.message}: {_describe(plan, layout)}"
    yield dataclasses.replace(first, message=message, warning=warning)
    return (yield from stream)


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
        # ":0": a free port, no warning when another dashboard holds 8787.
        with LocalCluster(dashboard_address=":0") as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(address, timeout=30)
    except OSError as err:
        raise UserInputError(f"cannot reach the dask scheduler at {address}: {err}") from err
    with client:
        yield client
