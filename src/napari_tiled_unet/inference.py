"""Overlap-tile prediction: the engine behind the Predict widget, the CLI and the dask path."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.axes import Layout, choose_layout
from napari_tiled_unet.device import PRECISIONS
from napari_tiled_unet.events import Progress, run_to_completion
from napari_tiled_unet.model.memory import (
    TILE_MEMORY_BUDGET,
    format_bytes,
    tile_memory,
    voxel_budget,
)
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.tiling.plan import Tile, TilePlan, default_tile_shape, plan_tiles
from napari_tiled_unet.tiling.stitch import iter_run_plan

if TYPE_CHECKING:
    import torch

    from napari_tiled_unet.model.unet import UNet

logger = logging.getLogger(__name__)

OUTPUTS = ("labels", "probabilities", "instances")


def resolve_model(model: UNet | str | os.PathLike | None) -> UNet:
    """Return a :class:`UNet` for a UNet, a model-file path, or None (the bundled default model)."""
    from napari_tiled_unet.model.modelfile import default_model_path, load_model
    from napari_tiled_unet.model.unet import UNet

    if model is None:
        model = default_model_path()
    if isinstance(model, UNet):
        return model
    if isinstance(model, str | os.PathLike):
        return load_model(model)
    raise TypeError(f"model must be a UNet or a model-file path, got {type(model).__name__}")


def as_channel_first(image, model: UNet, name: str = "image"):
    """Return ``image`` viewed as ``(C, *spatial)`` for ``model``, or raise a ValueError saying why not.

    A single-channel model takes ``(Y, X)`` (2D) or ``(Z, Y, X)`` (3D); a model with C input
    channels takes ``(C, Y, X)`` / ``(C, Z, Y, X)``.
    """
    cfg = model.config
    shape = tuple(image.shape)
    spatial = "ZYX"[-cfg.ndim :]
    if cfg.in_channels == 1:
        expected = f"a {cfg.ndim}D single-channel image with axes {spatial}"
        ok = len(shape) == cfg.ndim
    else:
        expected = f"a {cfg.ndim}D image with {cfg.in_channels} channels, axes C{spatial}"
        ok = len(shape) == cfg.ndim + 1 and shape[0] == cfg.in_channels
    if not ok:
        hint = ""
        if len(shape) == cfg.ndim + 1 and shape[-1] in (3, 4):
            hint = " It looks like an RGB(A) image; convert it to one channel first."
        elif len(shape) > cfg.ndim:
            hint = " Pick one plane or channel, or use a model made for this many axes."
        raise ValueError(f"{name} has shape {shape}, but the model expects {expected}.{hint}")
    dtype = np.dtype(image.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype.kind == "b") or np.issubdtype(
        dtype, np.complexfloating
    ):
        raise ValueError(f"{name} has dtype {dtype}; expected real numbers (integer or float)")
    if cfg.in_channels == 1:
        return _ChannelView(image)
    return image


class _ChannelView:
    """A leading length-1 channel axis on any sliceable array-like, without copying."""

    def __init__(self, array):
        self.array = array
        self.shape = (1, *array.shape)
        self.dtype = array.dtype
        self.ndim = array.ndim + 1

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self.array[key[1:]])[None]


def _check_dtype(image, name: str) -> None:
    dtype = np.dtype(image.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype.kind == "b") or np.issubdtype(
        dtype, np.complexfloating
    ):
        raise ValueError(f"{name} has dtype {dtype}; expected real numbers (integer or float)")


def image_layout(
    image,
    model: UNet,
    *,
    axes: str | Layout | None = None,
    channels: Sequence[int] | None = None,
    name: str = "image",
) -> Layout:
    """How ``model`` reads ``image``: its axis layout, the iterated axes and the channels.

    Parameters
    ----------
    image : array-like
        Only its ``shape`` and ``dtype`` are used.
    model : UNet
        The network (``in_channels``, ``ndim``).
    axes : str or Layout, optional
        The image's layout, e.g. ``"TZCYX"``, ``"YXC"`` (see :mod:`napari_tiled_unet.axes`).
        None: the model's plain layout (``YX``, ``ZYX``, ``CYX``, ``CZYX``) when the image has
        that many axes and fits it, else inferred from the shape
        (:func:`~napari_tiled_unet.axes.infer_axes`); an ambiguous shape is an error listing
        the readings considered.
    channels : sequence of int, optional
        Channels of the C axis to feed the model, in order. None: the channel selection
        stored in the model file when the C axis has as many channels as the model's training
        images had, else all channels (as for :func:`iter_predict`).
    name : str
        How to call the image in errors.

    Raises
    ------
    ValueError
        (:class:`~napari_tiled_unet.axes.AxesError`) naming the shape, the axes and what the
        model expects; or for a dtype that is not real numbers.
    """
    if isinstance(axes, Layout):
        layout = axes
        if layout.shape != tuple(int(n) for n in image.shape):
            raise ValueError(
                f"{name} has shape {tuple(image.shape)}; the layout is for {layout.shape}"
            )
    else:
        layout = choose_layout(image.shape, model, axes=axes, channels=channels, name=name)
    _check_dtype(image, name)
    return layout


def _labels_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16)


def _memory_format(ndim: int):
    """The channels-last layout for a 2D or 3D network: 1.5–2× faster convolutions on CPU."""
    import torch

    return torch.channels_last if ndim == 2 else torch.channels_last_3d


def check_precision(precision: str, device_type: str) -> None:
    """Raise a ValueError unless ``precision`` is known and usable on ``device_type`` ("cpu", …)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "float16" and device_type == "cpu":
        raise ValueError("precision 'float16' needs a GPU; on the CPU use 'bfloat16' or 'float32'")


@contextlib.contextmanager
def inference_setup(net: UNet, device: torch.device) -> Iterator[UNet]:
    """``net`` in eval mode on ``device`` with channels-last weights; put back as it was after."""
    import torch

    first = next(net.parameters())
    was_training, old_device = net.training, first.device
    net.eval().to(device, memory_format=_memory_format(net.config.ndim))
    try:
        yield net
    finally:
        net.to(old_device, memory_format=torch.contiguous_format).train(was_training)


@contextlib.contextmanager
def _ieee_float32(device: torch.device) -> Iterator[None]:
    """cuDNN convolutions in true float32. PyTorch lets them use TF32 by default, which moved
    probabilities by 2e-3 on an H200 and would break tiled == whole-image exactness."""
    import torch

    cudnn = torch.backends.cudnn
    if device.type != "cuda" or not cudnn.allow_tf32:
        yield
        return
    cudnn.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32 = True


def predict_batch(
    model: UNet,
    batch: np.ndarray,
    tiles: Sequence[Tile],
    normalization: Normalization,
    output: str,
    device: torch.device,
    name: str = "image",
    precision: str = "float32",
) -> np.ndarray:
    """The per-tile function: normalise a batch of tiles, run the network, return its output.

    ``batch`` is ``(B, C, *tile_shape)`` as read by
    :func:`~napari_tiled_unet.tiling.stitch.read_tile` for ``tiles``; the result is
    ``(B, *output_tile_shape)`` class ids for ``output="labels"``, or ``(B, num_classes,
    *output_tile_shape)`` float32 softmax for ``output="probabilities"``. ``normalization``
    must be resolved (:meth:`Normalization.resolve`); ``model`` should be prepared by
    :func:`inference_setup`. ``precision`` "bfloat16"/"float16" runs the network under
    ``torch.autocast`` (softmax and arg-max in float32). Top-level and free of closures, so
    the local loop and the dask tasks (:mod:`napari_tiled_unet.distributed`) share it.
    """
    import torch

    x = normalization.apply(batch, channel_axis=1)
    if not np.isfinite(x).all():
        region = ", ".join(
            f"{a} {s.start}:{s.stop}"
            for a, s in zip("ZYX"[-len(tiles[0].write) :], tiles[0].write, strict=True)
        )
        raise ValueError(
            f"{name} contains NaN or infinite values (near {region}); replace them, e.g. "
            "with numpy.nan_to_num, before predicting"
        )
    layout = _memory_format(x.ndim - 2)
    with torch.inference_mode():
        inputs = torch.from_numpy(x).to(device).contiguous(memory_format=layout)
        if precision == "float32":
            with _ieee_float32(device):
                logits = model(inputs)
        else:
            with torch.autocast(device.type, dtype=getattr(torch, precision)):
                logits = model(inputs)
        logits = logits.float()
        if output == "labels":
            return logits.argmax(dim=1).to("cpu").numpy().astype(_labels_dtype(logits.shape[1]))
        return torch.softmax(logits, dim=1).to("cpu").numpy()


def _forward_fn(
    model: UNet,
    device: torch.device,
    normalization: Normalization,
    output: str,
    name: str,
    precision: str,
):
    def tile_fn(batch: np.ndarray, tiles) -> np.ndarray:
        return predict_batch(model, batch, tiles, normalization, output, device, name, precision)

    return tile_fn


def iter_predict(
    image,
    model: UNet | str | os.PathLike | None = None,
    *,
    axes: str | Layout | None = None,
    channels: Sequence[int] | None = None,
    tile_shape: Sequence[int] | None = None,
    halo: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    output: str = "labels",
    out: Any = None,
    name: str = "image",
    precision: str = "float32",
) -> Generator[Progress, None, Any]:
    """Predict ``image`` tile by tile, yielding progress; the generator returns the result.

    Parameters
    ----------
    image : array-like
        ``(Y, X)`` for a single-channel 2D model, ``(C, Y, X)`` for a C-channel model, or any
        layout named by ``axes``. Any array-like with numpy-style slicing (numpy, memmap,
        zarr, dask, napari layer data) is read tile by tile.
    model : UNet or path-like, optional
        A network or a model file; None uses the bundled default model. The normalisation
        stored in the model's metadata is applied; a bare UNet gets the image as float32.
    axes : str, optional
        The image's axis layout, letters T, Z, C, Y, X in the image's order (case-insensitive),
        e.g. ``"TZCYX"``, ``"YXC"`` (RGB), ``"TYX"``. Axes the model does not take (T; Z for a
        2D model) are iterated: each frame is predicted in turn, streaming, into its slice of
        the result. None: the model's plain layout (``YX``, ``ZYX``, ``CYX``, ``CZYX``) when
        the image has that many axes and fits it, otherwise inferred from the shape (a stack
        of planes for a 2D model, a last axis of at most 4 as channels, e.g. RGB); an
        ambiguous shape raises a ValueError listing the readings considered
        (:mod:`napari_tiled_unet.axes`).
    channels : sequence of int, optional
        Channels of the C axis to feed the model, in order (picks and reorders); needed when
        the image has more channels than the model takes (e.g. ``[1]`` for a single-channel
        model). Always used when given. None: a model trained on a channel selection (e.g.
        ``train(..., channels=[2, 0])`` on 3-channel images) applies that selection, stored
        in its model file, to an image whose C axis has as many channels as its training
        images had (3); an image with the model's ``in_channels`` channels is read as it is
        (already selected); otherwise all channels.
    tile_shape : sequence of int, optional
        Largest network input tile shape in pixels (context included). Default: the largest
        tile up to 1280 px (2D; 256 in 3D) whose forward pass is estimated at 768 MiB or less
        (:func:`plan_for`; the bundled model gets 1280 px); the plan shrinks tiles to spread
        the work evenly (:func:`~napari_tiled_unet.tiling.plan.plan_tiles`). Must suit the network
        (multiples of ``2**depth`` for 'same', valid sizes such as 572 for a depth-4 'valid'
        network); errors name sizes that work.
    halo : int, optional
        Context per side each tile reads, for 'same' networks; None (default): the whole
        receptive field, which makes the tiled result equal the whole-image prediction (107 px
        per side at depth 4). Smaller halos allow small tiles that keep most of their work
        (3D networks, where the exact halo forces 240³-voxel tiles at depth 4) but differ
        slightly near tile borders; rounded up to stay on the pooling grid
        (:meth:`~napari_tiled_unet.model.geometry.UNetGeometry.with_halo`). The README lists
        measured differences.
    batch_size : int
        Tiles per forward pass.
    device : {"auto", "cpu", "cuda", "mps"}
        "auto" picks cuda, then mps, then cpu.
    output : {"labels", "probabilities", "instances"}
        "labels": class index per pixel, uint8 (uint16 above 256 classes), shaped like the
        image without its C axis, in the image's axis order (``(Y, X)``, ``(T, Y, X)``, ...).
        "probabilities": softmax, float32, with a leading class axis (``(num_classes, Y, X)``).
        "instances": object ids, int32, shaped like "labels", from a model trained on instance
        labels (background/interior/boundary): the class map, labelled by
        :func:`~napari_tiled_unet.postprocess.instances_from_classes` frame by frame (objects
        never join across iterated axes).
    out : array-like, optional
        Where to write the result (shape as above); e.g. a memmap or zarr array for images
        larger than memory. A new numpy array by default. For "instances" with ``out``, the
        class map goes to a temporary zarr store in the system's temporary folder and is
        labelled block by block
        (:func:`~napari_tiled_unet.instances_blockwise.iter_instances_blockwise`), so memory
        stays bounded; without ``out`` it is held in memory (one byte per pixel).
    name : str
        How to call the image in error messages (e.g. the napari layer name).
    precision : {"float32", "bfloat16", "float16"}
        Arithmetic of the network's forward pass. "bfloat16" (CPU or GPU) and "float16" (GPU)
        run it under ``torch.autocast``: faster where the hardware supports it, results no
        longer exact (see the README for the measured label agreement).

    Yields
    ------
    Progress
        ``stage="predict"``, ``done`` and ``total`` in tiles over the whole job (all frames);
        first with ``done=0``. For "instances" with ``out``, then ``stage="instances"``
        events with their own ``done`` and ``total`` (block steps over all frames).

    Returns
    -------
    array-like
        ``out`` (or the new array) holding the result.

    Notes
    -----
    A "percentile" normalisation is resolved once for the whole image (every frame, per
    channel), so the planes of a stack or the frames of a movie share one intensity mapping
    and an empty plane is not stretched into noise; a frame predicted on its own may then
    differ by its normalisation (with a model normalising "none" or "fixed", a time series
    gives exactly the per-frame predictions).
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    net = resolve_model(model)
    layout = image_layout(image, net, axes=axes, channels=channels, name=name)
    options = dict(tile_shape=tile_shape, halo=halo, batch_size=batch_size, device=device)
    options.update(name=name, precision=precision)
    if output == "instances":
        return (yield from _iter_instances(image, net, out, layout=layout, **options))
    return (yield from _iter_layout(image, net, layout, output=output, out=out, **options))


def _iter_layout(
    image,
    net: UNet,
    layout: Layout,
    *,
    output: str,
    out: Any = None,
    tile_shape: Sequence[int] | None = None,
    halo: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    name: str = "image",
    precision: str = "float32",
) -> Generator[Progress, None, Any]:
    """Labels or probabilities of every frame of ``layout``, one Progress stream."""
    from napari_tiled_unet.device import resolve_device

    plan, warning = _plan_and_warning(layout.spatial_shape, net, tile_shape, halo)
    out_shape, out_dtype, _axes = layout_output_spec(net, layout, output)
    target = out if out is not None else np.zeros(out_shape, out_dtype)
    if tuple(target.shape) != out_shape:
        raise ValueError(
            f"out has shape {tuple(target.shape)}; expected {out_shape} for output={output!r}"
        )
    _check_model_channels(net, layout, name)
    stored = Normalization.from_dict(net.metadata.get("normalization"))
    normalization = stored.resolve(layout.job(image), channel_axis=0)
    torch_device = resolve_device(device)
    check_precision(precision, torch_device.type)
    frames, per_frame = layout.n_frames, len(plan)
    total = frames * per_frame
    lead = 1 if output == "probabilities" else 0
    kind = "labels" if output == "labels" else "probabilities"
    with inference_setup(net, torch_device):
        need = format_bytes(tile_memory(net.config, plan.tile_shape, batch_size))
        message = f"{per_frame} tiles of {plan.tile_shape} (~{need} per forward pass)"
        if halo is not None and not net.geometry.with_halo(halo).exact:
            message += f", halo {halo} (approximate near tile borders)"
        if frames > 1:
            message = f"{frames} frames of {message}"
        yield Progress("predict", 0, total, message, warning=warning)
        for k, index in enumerate(layout.frames()):
            where = layout.frame_name(index)
            frame_name = f"{name} at {where}" if where else name
            tile_fn = _forward_fn(net, torch_device, normalization, kind, frame_name, precision)
            source = layout.frame(image, index)
            frame_out = layout.frame_out(target, index, lead=lead)
            for done in iter_run_plan(source, plan, tile_fn, frame_out, batch_size=batch_size):
                done += k * per_frame
                detail = f" ({where})" if where else ""
                yield Progress("predict", done, total, f"tile {done}/{total}{detail}")
    return target


def _check_model_channels(net: UNet, layout: Layout, name: str) -> None:
    if layout.in_channels != net.config.in_channels:  # a Layout built for another model
        raise ValueError(
            f"{name}: the layout feeds {layout.in_channels} channel(s); the model takes "
            f"{net.config.in_channels}"
        )
    if layout.ndim != net.config.ndim:
        raise ValueError(f"{name}: the layout is {layout.ndim}D; the model is {net.config.ndim}D")


def _iter_instances(
    image,
    net: UNet,
    out: Any = None,
    *,
    layout: Layout | None = None,
    scratch_dir: str | os.PathLike | None = None,
    scratch_name: str = "classes",
    **kwargs: Any,
) -> Generator[Progress, None, Any]:
    """``iter_predict(output="instances")``: the class map first, then object ids from it.

    Without ``out`` the class map is stitched in memory and labelled by
    :func:`~napari_tiled_unet.postprocess.instances_from_classes`. With ``out`` it is
    streamed into a temporary zarr store in a new folder inside ``scratch_dir`` (None: the
    system's temporary folder), removed at the end, also on error, cancel or
    KeyboardInterrupt, and labelled block by block into ``out``
    (:func:`~napari_tiled_unet.instances_blockwise.iter_instances_blockwise`, the same
    result); memory then stays bounded by a batch of tiles or a block. An image with
    iterated axes (``layout``) is labelled frame by frame.
    """
    from napari_tiled_unet.postprocess import check_instance_classes, instances_from_classes

    check_instance_classes(net.config.num_classes)
    if layout is None:
        layout = image_layout(image, net, name=kwargs.get("name", "image"))
    frames = list(layout.frames())
    if out is None:
        classes = yield from _iter_layout(image, net, layout, output="labels", out=None, **kwargs)
        if len(frames) == 1 and layout.frame_out(classes, frames[0]) is classes:
            return instances_from_classes(classes)
        result = np.zeros(layout.output_shape, np.int32)
        for index in frames:
            frame = np.asarray(layout.frame_out(classes, index)[...])
            layout.frame_out(result, index)[...] = instances_from_classes(frame)
        return result
    from napari_tiled_unet.instances_blockwise import iter_instances_blockwise
    from napari_tiled_unet.io.store import temporary_array

    shape = layout.output_shape
    if tuple(out.shape) != shape:
        raise ValueError(
            f"out has shape {tuple(out.shape)}; expected {shape} for output='instances'"
        )
    dtype = _labels_dtype(net.config.num_classes)
    with temporary_array(scratch_dir, shape, dtype, prefix=scratch_name) as classes:
        yield from _iter_layout(image, net, layout, output="labels", out=classes, **kwargs)
        if len(frames) == 1:
            frame_classes = layout.frame_out(classes, frames[0])
            frame_out = layout.frame_out(out, frames[0])
            yield from iter_instances_blockwise(frame_classes, frame_out)
            return out
        steps = None
        for k, index in enumerate(frames):
            blockwise = iter_instances_blockwise(
                layout.frame_out(classes, index), layout.frame_out(out, index)
            )
            where = layout.frame_name(index)
            for event in blockwise:
                steps = event.total if steps is None else steps
                done = k * steps + event.done
                if k and not event.done:
                    continue  # one stream: each frame's opening event is the last one's end
                yield Progress(event.stage, done, steps * len(frames), f"{event.message} ({where})")
        return out


def output_spec(
    model: UNet, spatial: Sequence[int], output: str = "labels"
) -> tuple[tuple[int, ...], np.dtype, str]:
    """Shape, dtype and axis letters of :func:`iter_predict`'s result for a spatial shape."""
    spatial = tuple(int(n) for n in spatial)
    letters = "ZYX"[-len(spatial) :]
    if output == "labels":
        return spatial, _labels_dtype(model.config.num_classes), letters
    if output == "instances":
        return spatial, np.dtype(np.int32), letters
    if output == "probabilities":
        return (model.config.num_classes, *spatial), np.dtype(np.float32), "C" + letters
    raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")


def layout_output_spec(
    model: UNet, layout: Layout, output: str = "labels"
) -> tuple[tuple[int, ...], np.dtype, str]:
    """Shape, dtype and axis letters of :func:`iter_predict`'s result for an image layout.

    The image's shape and axes without C (``"TZYX"`` for a ``"TZCYX"`` image); probabilities
    add a leading class axis, lettered ``C``.
    """
    _shape, dtype, _letters = output_spec(model, layout.spatial_shape, output)
    if output == "probabilities":
        return (model.config.num_classes, *layout.output_shape), dtype, "C" + layout.output_axes
    return layout.output_shape, dtype, layout.output_axes


def predicted_spec(
    image,
    model: UNet | str | os.PathLike | None = None,
    *,
    output: str = "labels",
    axes: str | Layout | None = None,
    channels: Sequence[int] | None = None,
    name: str = "image",
) -> tuple[tuple[int, ...], np.dtype, str]:
    """Shape, dtype and axes of what :func:`iter_predict` would return for ``image``.

    Raises the same layout errors as :func:`iter_predict`, before any work.
    """
    net = resolve_model(model)
    layout = image_layout(image, net, axes=axes, channels=channels, name=name)
    return layout_output_spec(net, layout, output)


def iter_predict_to_file(
    image,
    path: str | os.PathLike,
    model: UNet | str | os.PathLike | None = None,
    *,
    output: str = "labels",
    tile: int = 256,
    axes: str | Layout | None = None,
    channels: Sequence[int] | None = None,
    **kwargs: Any,
) -> Generator[Progress, None, Any]:
    """Predict ``image`` into a file on disk, tile by tile; the generator returns it, opened lazily.

    The result is streamed into a temporary store beside ``path`` and published under
    ``path`` only when complete (see :func:`napari_tiled_unet.io.store.create_output`):
    closing the generator, an error or KeyboardInterrupt leave nothing under ``path`` (an
    older file there stays as it was). Memory stays bounded by a batch of tiles, or for
    ``output="instances"`` by a block: the class map is streamed into a temporary zarr store
    (in a hidden folder beside ``path``, removed at the end, also on error, cancel or
    KeyboardInterrupt), then labelled block by block into the output
    (:func:`~napari_tiled_unet.instances_blockwise.iter_instances_blockwise`; the same
    result as :func:`predict`), with ``stage="instances"`` progress after the tiles.

    Parameters
    ----------
    image : array-like
        As for :func:`iter_predict`.
    path : path-like
        ``.tif``/``.tiff``: tiled zlib-compressed BigTIFF; ``.zarr``: zarr array store. The
        result's axis letters (e.g. ``"TYX"``) are stored in its metadata.
    model : UNet or path-like, optional
        As for :func:`iter_predict`.
    output : {"labels", "probabilities", "instances"}
        As for :func:`iter_predict`.
    tile : int
        TIFF tile / zarr chunk edge in pixels (multiple of 16); not the network tile.
    axes, channels
        As for :func:`iter_predict`.
    **kwargs
        ``tile_shape``, ``halo``, ``batch_size``, ``device``, ``name``, ``precision``: as for
        :func:`iter_predict`.

    Returns
    -------
    numpy.memmap or zarr.Array
        The written file, opened read-only.
    """
    from napari_tiled_unet.io.store import check_output_path, create_output, open_output

    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    check_output_path(path)
    net = resolve_model(model)
    layout = image_layout(
        image, net, axes=axes, channels=channels, name=kwargs.get("name", "image")
    )
    shape, dtype, out_axes = layout_output_spec(net, layout, output)
    if output == "instances":
        from napari_tiled_unet.postprocess import check_instance_classes

        check_instance_classes(net.config.num_classes)
    with create_output(path, shape, dtype, axes=out_axes, tile=tile) as out:
        if output == "instances":
            scratch = dict(scratch_dir=Path(path).parent, scratch_name=f"{Path(path).name}.classes")
            yield from _iter_instances(image, net, out, layout=layout, **scratch, **kwargs)
        else:
            yield from iter_predict(image, net, axes=layout, output=output, out=out, **kwargs)
    return open_output(path)


def predict(image, model: UNet | str | os.PathLike | None = None, **kwargs: Any):
    """Blocking form of :func:`iter_predict`; takes the same arguments and returns the result.

    E.g. ``predict(movie, "model.pt", axes="TCYX", channels=[0, 2])``; without
    ``channels``, a model trained on a channel selection applies its stored one (see
    :func:`iter_predict`).
    """
    return run_to_completion(iter_predict(image, model, **kwargs))


def plan_for(
    image_shape: Sequence[int],
    model: UNet,
    tile_shape: Sequence[int] | None = None,
    halo: int | None = None,
) -> TilePlan:
    """The tile plan :func:`iter_predict` would use for a spatial ``image_shape``.

    Without a ``tile_shape``, tiles are the largest (up to
    :data:`~napari_tiled_unet.tiling.plan.DEFAULT_TILE_EDGE`) whose forward pass fits
    :data:`~napari_tiled_unet.model.memory.TILE_MEMORY_BUDGET`. Where even the smallest tile
    that leaves output does not (an exact depth-4 3D network: 240³ voxels), that tile is used
    and a UserWarning says how much it needs and which ``halo`` would fit
    (:func:`suggest_halo`). ``halo``: see
    :meth:`~napari_tiled_unet.model.geometry.UNetGeometry.with_halo`.
    """
    plan, warning = _plan_and_warning(image_shape, model, tile_shape, halo)
    if warning:
        warnings.warn(warning, stacklevel=2)
    return plan


def _plan_and_warning(
    image_shape: Sequence[int],
    model: UNet,
    tile_shape: Sequence[int] | None,
    halo: int | None,
) -> tuple[TilePlan, str]:
    """:func:`plan_for`'s plan, and its warning as text ("" if none)."""
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


#: A suggested halo leaves default tiles that keep at least this share of their voxels as
#: output (half of each edge in 3D).
SUGGESTED_KEPT_SHARE = 0.125


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


def forward_whole_image(image: np.ndarray, model: UNet, device: str = "cpu") -> np.ndarray:
    """Class probabilities from one forward pass over the whole mirror-padded image (no tiling).

    The image ``(C, *spatial)`` is mirror-padded by the network's context before each axis
    and by at least its context after it (more where the network needs a larger size), which
    is the reference the overlap-tile engine reproduces exactly. Memory grows with the image:
    use it for tests and benchmarks.

    Returns
    -------
    numpy.ndarray, shape (num_classes, *spatial), float32
    """
    import torch

    from napari_tiled_unet.device import resolve_device

    spatial = image.shape[1:]
    pads, crop = [], []
    for n, geometry in zip(spatial, model.geometry.axes, strict=True):  # per axis: Z may differ
        size = geometry.nearest_valid_sizes(n + geometry.context_before + geometry.context_after)[1]
        pads.append((geometry.context_before, size - n - geometry.context_before))
        first = geometry.context_before - geometry.output_offset
        crop.append(slice(first, first + n))
    padded = np.pad(np.asarray(image, dtype=np.float32), [(0, 0), *pads], mode="reflect")
    dev = resolve_device(device)
    layout = _memory_format(model.config.ndim)
    with inference_setup(model, dev), torch.inference_mode(), _ieee_float32(dev):
        logits = model(torch.from_numpy(padded[None]).to(dev).contiguous(memory_format=layout))
        probs = torch.softmax(logits, dim=1)[0].cpu().numpy()
    return probs[(slice(None), *crop)]
