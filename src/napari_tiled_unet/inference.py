"""Overlap-tile prediction: the engine behind the Predict widget, the CLI and the dask path."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.device import PRECISIONS
from napari_tiled_unet.events import Progress, run_to_completion
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.tiling.plan import Tile, TilePlan, plan_tiles
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

    x = normalization.apply(batch)
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
    tile_shape: Sequence[int] | None = None,
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
        ``(Y, X)`` for a single-channel 2D model, ``(C, Y, X)`` for a C-channel model. Any
        array-like with numpy-style slicing (numpy, memmap, zarr, dask) is read tile by tile.
    model : UNet or path-like, optional
        A network or a model file; None uses the bundled default model. The normalisation
        stored in the model's metadata is applied; a bare UNet gets the image as float32.
    tile_shape : sequence of int, optional
        Network input tile shape in pixels (context included). Default: about 1024 px (2D; 256 in 3D), shrunk
        for smaller images. Must suit the network (multiples of ``2**depth`` for 'same', valid
        sizes such as 572 for a depth-4 'valid' network); errors name sizes that work.
    batch_size : int
        Tiles per forward pass.
    device : {"auto", "cpu", "cuda", "mps"}
        "auto" picks cuda, then mps, then cpu.
    output : {"labels", "probabilities", "instances"}
        "labels": class index per pixel, ``(Y, X)`` uint8 (uint16 above 256 classes).
        "probabilities": softmax, ``(num_classes, Y, X)`` float32. "instances": object ids
        ``(Y, X)`` int32 from a model trained on instance labels (background/interior/
        boundary): the class map, labelled by
        :func:`~napari_tiled_unet.postprocess.instances_from_classes`.
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
        ``stage="predict"``, ``done`` and ``total`` in tiles; first with ``done=0``. For
        "instances" with ``out``, then ``stage="instances"`` events with their own ``done``
        and ``total`` (block steps).

    Returns
    -------
    array-like
        ``out`` (or the new array) holding the result.
    """
    from napari_tiled_unet.device import resolve_device

    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    net = resolve_model(model)
    if output == "instances":
        options = dict(tile_shape=tile_shape, batch_size=batch_size, device=device)
        options.update(name=name, precision=precision)
        return (yield from _iter_instances(image, net, out, **options))
    source = as_channel_first(image, net, name)
    spatial = tuple(source.shape[1:])
    geometry = net.geometry
    plan = plan_tiles(spatial, geometry, tile_shape)
    out_shape, out_dtype, _axes = output_spec(net, spatial, output)
    target = out if out is not None else np.zeros(out_shape, out_dtype)
    if tuple(target.shape) != out_shape:
        raise ValueError(
            f"out has shape {tuple(target.shape)}; expected {out_shape} for output={output!r}"
        )

    normalization = Normalization.from_dict(net.metadata.get("normalization")).resolve(source)
    torch_device = resolve_device(device)
    check_precision(precision, torch_device.type)
    with inference_setup(net, torch_device):
        yield Progress("predict", 0, len(plan), f"{len(plan)} tiles of {plan.tile_shape}")
        tile_fn = _forward_fn(
            net,
            torch_device,
            normalization,
            "labels" if output == "labels" else "probabilities",
            name,
            precision,
        )
        for done in iter_run_plan(source, plan, tile_fn, target, batch_size=batch_size):
            yield Progress("predict", done, len(plan), f"tile {done}/{len(plan)}")
    return target


def _iter_instances(
    image,
    net: UNet,
    out: Any = None,
    *,
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
    result); memory then stays bounded by a batch of tiles or a block.
    """
    from napari_tiled_unet.postprocess import check_instance_classes, instances_from_classes

    check_instance_classes(net.config.num_classes)
    if out is None:
        classes = yield from iter_predict(image, net, output="labels", **kwargs)
        return instances_from_classes(classes)
    from napari_tiled_unet.instances_blockwise import iter_instances_blockwise
    from napari_tiled_unet.io.store import temporary_array

    source = as_channel_first(image, net, kwargs.get("name", "image"))
    spatial = tuple(source.shape[1:])
    if tuple(out.shape) != spatial:
        raise ValueError(
            f"out has shape {tuple(out.shape)}; expected {spatial} for output='instances'"
        )
    dtype = _labels_dtype(net.config.num_classes)
    with temporary_array(scratch_dir, spatial, dtype, prefix=scratch_name) as classes:
        yield from iter_predict(image, net, output="labels", out=classes, **kwargs)
        return (yield from iter_instances_blockwise(classes, out))


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


def iter_predict_to_file(
    image,
    path: str | os.PathLike,
    model: UNet | str | os.PathLike | None = None,
    *,
    output: str = "labels",
    tile: int = 256,
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
        ``.tif``/``.tiff``: tiled zlib-compressed BigTIFF; ``.zarr``: zarr array store.
    model : UNet or path-like, optional
        As for :func:`iter_predict`.
    output : {"labels", "probabilities", "instances"}
        As for :func:`iter_predict`.
    tile : int
        TIFF tile / zarr chunk edge in pixels (multiple of 16); not the network tile.
    **kwargs
        ``tile_shape``, ``batch_size``, ``device``, ``name``, ``precision``: as for
        :func:`iter_predict`.

    Returns
    -------
    numpy.memmap or zarr.Array
        The written file, opened read-only.
    """
    from napari_tiled_unet.io.store import check_output_path, create_output, open_output

    check_output_path(path)
    net = resolve_model(model)
    source = as_channel_first(image, net, kwargs.get("name", "image"))
    shape, dtype, axes = output_spec(net, source.shape[1:], output)
    if output == "instances":
        from napari_tiled_unet.postprocess import check_instance_classes

        check_instance_classes(net.config.num_classes)
    with create_output(path, shape, dtype, axes=axes, tile=tile) as out:
        if output == "instances":
            scratch = dict(scratch_dir=Path(path).parent, scratch_name=f"{Path(path).name}.classes")
            yield from _iter_instances(image, net, out, **scratch, **kwargs)
        else:
            yield from iter_predict(image, net, output=output, out=out, **kwargs)
    return open_output(path)


def predict(image, model: UNet | str | os.PathLike | None = None, **kwargs: Any):
    """Blocking form of :func:`iter_predict`; takes the same arguments and returns the result."""
    return run_to_completion(iter_predict(image, model, **kwargs))


def plan_for(
    image_shape: Sequence[int], model: UNet, tile_shape: Sequence[int] | None = None
) -> TilePlan:
    """The tile plan :func:`iter_predict` would use for a spatial ``image_shape``."""
    return plan_tiles(tuple(image_shape), model.geometry, tile_shape)


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

    geometry = model.geometry
    spatial = image.shape[1:]
    pads = []
    for n in spatial:
        size = geometry.nearest_valid_sizes(n + geometry.context_before + geometry.context_after)[1]
        pads.append((geometry.context_before, size - n - geometry.context_before))
    padded = np.pad(np.asarray(image, dtype=np.float32), [(0, 0), *pads], mode="reflect")
    dev = resolve_device(device)
    with torch.inference_mode():
        logits = model.eval().to(dev)(torch.from_numpy(padded[None]).to(dev))
        probs = torch.softmax(logits, dim=1)[0].cpu().numpy()
    first = geometry.context_before - geometry.output_offset
    return probs[(slice(None), *(slice(first, first + n) for n in spatial))]
