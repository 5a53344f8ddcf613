"""Overlap-tile prediction on dask: the same tile plan and per-tile function, many machines.

:func:`predict_dask` returns a lazy ``dask.array.Array`` built from the plan of
:func:`~napari_tiled_unet.inference.iter_predict`: one task per batch of tiles reads each
tile's bounding box from the (dask) image, mirror-pads it with
:func:`~napari_tiled_unet.tiling.stitch.take_window` and runs
:func:`~napari_tiled_unet.inference.predict_batch`; the tiles' valid centres are assembled with
``dask.array.block``. The result equals the local one exactly (same tiles, same batches, same
function). It computes on whatever dask scheduler is active: the local threaded one, or a
``dask.distributed`` Client (LocalCluster, a scheduler address, dask-jobqueue's SLURMCluster).
The network travels once, as its configuration and weights, and is rebuilt once per worker.

Needs the ``dask`` extra: ``pip install napari-tiled-unet[dask]``.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from napari_tiled_unet.events import Progress
from napari_tiled_unet.inference import (
    _memory_format,
    as_channel_first,
    check_precision,
    image_layout,
    output_spec,
    plan_for,
    predict_batch,
    resolve_model,
)
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.tiling.plan import Tile
from napari_tiled_unet.tiling.stitch import take_window, tile_window

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
            layout = _memory_format(net.config.ndim)
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


def _stored_selection(image, net, name: str) -> tuple[int, ...] | None:
    """The model's stored channel selection if ``image`` is ``(source_channels, *spatial)``.

    Raises the engine's AxesError, which names the stored selection, for a channels-first
    image with a channel count the model cannot take.
    """
    from napari_tiled_unet.axes import ModelSpec

    spec = ModelSpec.of(net)
    own = "C" + spec.spatial
    if spec.channels is None or len(image.shape) != len(own):
        return None
    return image_layout(image, net, axes=own, name=name).channels


def predict_dask(
    image,
    model=None,
    *,
    tile_shape: Sequence[int] | None = None,
    halo: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    output: str = "labels",
    client=None,
    name: str = "image",
    precision: str = "float32",
):
    """Lazy overlap-tile prediction of ``image`` as a ``dask.array.Array``.

    Parameters
    ----------
    image : array-like or dask.array.Array
        In the model's own layout, ``(*spatial)`` or ``(C, *spatial)``, or, for a model trained
        on a channel selection, ``(source_channels, *spatial)`` read through the stored
        selection (as :func:`~napari_tiled_unet.inference.iter_predict` without ``channels``);
        numpy, memmap or zarr inputs are wrapped with ``dask.array.from_array``. Each task
        reads only its tiles' boxes.
    model : UNet or path-like, optional
        As for :func:`~napari_tiled_unet.inference.iter_predict` (None: the bundled model).
    tile_shape, halo, batch_size, name, precision
        As for :func:`~napari_tiled_unet.inference.iter_predict`; the plan and the batches are
        the same, so the result equals :func:`~napari_tiled_unet.inference.predict`'s.
    device : {"auto", "cpu", "cuda", "mps"}
        Resolved on each worker ("auto": cuda, then mps, then cpu there).
    output : {"labels", "probabilities"}
        As for :func:`~napari_tiled_unet.inference.iter_predict`. For instances, store
        "labels" (the class map) with :func:`iter_store`, e.g. into a zarr array, and label
        it block by block with
        :func:`~napari_tiled_unet.instances_blockwise.iter_instances_blockwise` (the CLI
        does this).
    client : distributed.Client, optional
        If given, the network's weights are scattered to all workers once; otherwise they
        are one task of the graph. Computing runs on the active scheduler either way.

    Returns
    -------
    dask.array.Array
        Chunked like the plan's write windows; dtype and shape as
        :func:`~napari_tiled_unet.inference.output_spec`.
    """
    import dask
    import dask.array as da

    if output not in ("labels", "probabilities"):
        raise ValueError(f"output must be 'labels' or 'probabilities', got {output!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    check_precision(precision, device)  # "auto" is checked on the workers
    net = resolve_model(model)
    selection = _stored_selection(image, net, name)
    if selection is None:
        as_channel_first(image, net, name)  # shape and dtype errors, worded as for predict
    source = image if isinstance(image, da.Array) else da.from_array(image)
    if selection is not None:
        source = source[list(selection)]
    elif net.config.in_channels == 1:
        source = source[None]
    spatial = tuple(source.shape[1:])
    plan = plan_for(spatial, net, tile_shape, halo)
    out_shape, out_dtype, _axes = output_spec(net, spatial, output)
    lead = out_shape[: len(out_shape) - len(spatial)]

    normalization = Normalization.from_dict(net.metadata.get("normalization"))
    normalization = normalization.resolve(source, channel_axis=0)  # per channel, as predict
    payload = _model_payload(net)
    if client is not None:
        # A list: scattering a dict would scatter its values under the dict's keys.
        [payload] = client.scatter([payload], broadcast=True, hash=False)
    else:
        payload = dask.delayed(payload, pure=False, traverse=False)

    pieces = []
    for i in range(0, len(plan), batch_size):
        tiles = plan.tiles[i : i + batch_size]
        windows = [tile_window(t, spatial) for t in tiles]
        blocks = [source[(slice(None), *box)] for box, _ in windows]
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
            pieces.append(da.from_delayed(part, shape, out_dtype))
    counts = [len(range(0, n, s)) for n, s in zip(spatial, plan.stride, strict=True)]
    return da.block(_nest(pieces, counts))


def _nest(items: list, counts: Sequence[int]) -> list:
    """Row-major flat list → nested lists of the given per-axis counts (for ``da.block``)."""
    if len(counts) == 1:
        return list(items)
    step = len(items) // counts[0]
    return [_nest(items[i * step : (i + 1) * step], counts[1:]) for i in range(counts[0])]


def iter_store(array, out, client=None) -> Generator[Progress, None, Any]:
    """Compute a chunked dask ``array`` block by block into ``out`` on this machine.

    With a ``client``, blocks are computed on the cluster as they are ready and written here,
    so ``out`` (a numpy array, memmap or the zarr array of
    :func:`~napari_tiled_unet.io.store.create_output`) need not be reachable from the workers.
    Yields Progress in blocks; returns ``out``.
    """
    import dask

    indices = list(np.ndindex(*array.numblocks))
    offsets = [np.concatenate([[0], np.cumsum(c)]) for c in array.chunks]

    def region(idx):
        return tuple(slice(int(o[i]), int(o[i + 1])) for o, i in zip(offsets, idx, strict=True))

    yield Progress("predict", 0, len(indices), f"{len(indices)} blocks")
    if client is not None:
        from distributed import as_completed

        futures = client.compute([array.blocks[idx] for idx in indices])
        where = {f.key: region(idx) for f, idx in zip(futures, indices, strict=True)}
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
            out[region(idx)] = block
        done = start + len(group)
        yield Progress("predict", done, len(indices), f"block {done}/{len(indices)}")
    return out
