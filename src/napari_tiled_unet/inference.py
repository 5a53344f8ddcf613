"""Overlap-tile prediction: the engine behind the Predict widget, the CLI and the dask path.

One job per module: this one resolves the model and the image's layout and runs the tile
plan frame by frame (:func:`iter_predict`, :func:`iter_predict_to_file`); the network's
forward pass is :mod:`napari_tiled_unet.forward`, tile planning
:mod:`napari_tiled_unet.planning`, instance output :mod:`napari_tiled_unet.instances`.
Their public names are re-exported here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.axes import Layout, choose_layout
from napari_tiled_unet.device_workers import device_networks, device_stages, resolve_batch
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.events import Progress, run_to_completion
from napari_tiled_unet.forward import (
    check_precision,
    forward_whole_image,
    inference_setup,
    predict_batch,
    predict_written,
)
from napari_tiled_unet.instances import iter_model_instances
from napari_tiled_unet.model.memory import format_bytes, tile_memory
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.output_spec import OUTPUTS, layout_output_spec, output_spec
from napari_tiled_unet.planning import (
    SUGGESTED_KEPT_SHARE,
    check_tiling_options,
    plan_for,
    plan_with_warning,
    suggest_halo,
)
from napari_tiled_unet.rescale import check_diameter, iter_predict_rescaled
from napari_tiled_unet.tiling.stitch import iter_run_plan

if TYPE_CHECKING:
    from napari_tiled_unet.model.unet import UNet

__all__ = [
    "OUTPUTS",
    "SUGGESTED_KEPT_SHARE",
    "check_output_kind",
    "check_precision",
    "forward_whole_image",
    "image_layout",
    "inference_setup",
    "input_normalization",
    "iter_predict",
    "iter_predict_to_file",
    "layout_output_spec",
    "output_spec",
    "plan_for",
    "predict",
    "predict_batch",
    "predict_written",
    "predicted_spec",
    "resolve_model",
    "suggest_halo",
]


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


def check_output_kind(output: str, kinds: Sequence[str] = OUTPUTS) -> None:
    """Raise a UserInputError unless ``output`` is one of ``kinds``."""
    if output not in kinds:
        raise UserInputError(f"output must be one of {tuple(kinds)}, got {output!r}")


def _check_image(image, name: str) -> None:
    """Raise a UserInputError, saying what to pass, unless ``image`` is an array-like."""
    if isinstance(image, str | os.PathLike):
        raise UserInputError(
            f"{name} is a path ({os.fspath(image)!r}); pass the pixels as an array, e.g. "
            "napari_tiled_unet.io.tiff.open_tiff(path) (read lazily), or predict a file with "
            "napari_tiled_unet.jobs.predict_job(path, PredictRequest(...))"
        )
    if not all(hasattr(image, a) for a in ("shape", "dtype", "__getitem__")):
        hint = "; convert it with numpy.asarray(...)" if isinstance(image, list | tuple) else ""
        raise UserInputError(
            f"{name} must be an array with shape and dtype (numpy, memmap, zarr, dask or "
            f"napari layer data), got {type(image).__name__}{hint}"
        )


def _check_dtype(image, name: str) -> None:
    dtype = np.dtype(image.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype.kind == "b") or np.issubdtype(
        dtype, np.complexfloating
    ):
        raise UserInputError(f"{name} has dtype {dtype}; expected real numbers (integer or float)")


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
    UserInputError
        (:class:`~napari_tiled_unet.axes.AxesError`) naming the shape, the axes and what the
        model expects; for a given Layout made for another shape or model; or for an image
        that is not an array of real numbers. A ValueError, too.
    """
    _check_image(image, name)
    if isinstance(axes, Layout):
        layout = axes
        if layout.shape != tuple(int(n) for n in image.shape):
            raise UserInputError(
                f"{name} has shape {tuple(image.shape)}; the layout is for {layout.shape}"
            )
        if layout.in_channels != model.config.in_channels:
            raise UserInputError(
                f"{name}: the layout feeds {layout.in_channels} channel(s); the model takes "
                f"{model.config.in_channels}"
            )
        if layout.ndim != model.config.ndim:
            raise UserInputError(
                f"{name}: the layout is {layout.ndim}D; the model is {model.config.ndim}D"
            )
    else:
        layout = choose_layout(image.shape, model, axes=axes, channels=channels, name=name)
    _check_dtype(image, name)
    return layout


def input_normalization(net: UNet, layout: Layout, image) -> Normalization:
    """The model's input normalisation resolved for ``image`` as every engine applies it.

    Once for the whole image (every frame), per channel: see :func:`iter_predict`'s Notes.
    """
    return net.info.input_normalization.resolve(layout.job(image), channel_axis=0)


def iter_predict(
    image,
    model: UNet | str | os.PathLike | None = None,
    *,
    axes: str | Layout | None = None,
    channels: Sequence[int] | None = None,
    tile_shape: Sequence[int] | None = None,
    halo: int | None = None,
    batch_size: int | None = None,
    device: str | Sequence[str] = "auto",
    output: str = "labels",
    out: Any = None,
    name: str = "image",
    precision: str = "float32",
    diameter: float | str | None = None,
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
        stored with the model (``model.info``) is applied; a bare UNet gets the image as float32.
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
        receptive field rounded up to the pooling grid, which makes the tiled result equal the
        whole-image prediction (112 px per side at depth 4). Smaller halos allow small tiles that keep most of their work
        (3D networks, where the exact halo forces 240³-voxel tiles at depth 4) but differ
        slightly near tile borders; rounded up to stay on the pooling grid
        (:meth:`~napari_tiled_unet.model.geometry.UNetGeometry.with_halo`). The README lists
        measured differences.
    batch_size : int, optional
        Tiles per forward pass. None: 1 on the CPU; on a GPU as many as fit half its free
        memory by the estimate, at most 8 (:func:`~napari_tiled_unet.model.memory.default_batch`).
    device : str or sequence of str
        "auto" (cuda, then mps, then cpu), "cpu", "cuda", "cuda:N", "mps"; several devices
        ("cuda:0,cuda:1", a list, or "cuda:all") run one worker each, sharing the tiles, with
        the same result (:func:`~napari_tiled_unet.device.resolve_devices`).
    output : {"labels", "probabilities", "instances"}
        "labels": class index per pixel, uint8 (uint16 above 256 classes, uint32 above
        65,536: :func:`~napari_tiled_unet.forward.labels_dtype`), shaped like the
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
    diameter : float or "auto", optional
        The image's typical object diameter in pixels: the image is rescaled so its objects
        get the size the model was trained on (``model.info.object_diameter``), predicted,
        and the result mapped back onto its grid; "auto" measures it from a first
        prediction and rescales only if it differs by more than 20 %. None or 0: off. The
        image is then held in memory (:mod:`napari_tiled_unet.rescale`).

    Yields
    ------
    Progress
        ``stage="predict"``, ``done`` and ``total`` in tiles over the whole job (all frames);
        first with ``done=0``. For "instances", then ``stage="instances"`` events with
        their own ``done`` and ``total`` (block steps over all frames; closing the
        generator stops the labelling at the next block).

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
    check_output_kind(output)
    net = resolve_model(model)
    layout = image_layout(image, net, axes=axes, channels=channels, name=name)
    check_tiling_options(net, tile_shape, batch_size)
    options = dict(tile_shape=tile_shape, halo=halo, batch_size=batch_size, device=device)
    options.update(name=name, precision=precision)
    if check_diameter(diameter) is not None:
        scaled = iter_predict_rescaled(image, net, layout, diameter, output=output, **options)
        return (yield from scaled if out is None else _write_into(scaled, out))
    if output == "instances":
        return (yield from _iter_local_instances(image, net, layout, out, **options))
    return (yield from _iter_layout(image, net, layout, out, output=output, **options))


def _write_into(job: Generator[Progress, None, Any], out: Any) -> Generator[Progress, None, Any]:
    """Run ``job`` and copy its in-memory result into ``out`` (same shape), returning ``out``."""
    result = yield from job
    if tuple(out.shape) != tuple(result.shape):
        raise UserInputError(f"out has shape {tuple(out.shape)}; expected {result.shape}")
    out[...] = result
    return out


def _iter_local_instances(
    image,
    net: UNet,
    layout: Layout,
    out: Any = None,
    *,
    scratch_dir: str | os.PathLike | None = None,
    scratch_name: str = "classes",
    **options: Any,
) -> Generator[Progress, None, Any]:
    """``output="instances"`` on this machine: the class map by the local tile loop."""
    classes = functools.partial(_iter_layout, image, net, layout, output="labels", **options)
    scratch = dict(scratch_dir=scratch_dir, scratch_name=scratch_name)
    return (yield from iter_model_instances(layout, net, classes, out, **scratch))


def _iter_layout(
    image,
    net: UNet,
    layout: Layout,
    out: Any = None,
    *,
    output: str,
    tile_shape: Sequence[int] | None = None,
    halo: int | None = None,
    batch_size: int | None = None,
    device: str | Sequence[str] = "auto",
    name: str = "image",
    precision: str = "float32",
) -> Generator[Progress, None, Any]:
    """Labels or probabilities of every frame of ``layout``, one Progress stream."""
    from napari_tiled_unet.device import resolve_devices

    plan, warning = plan_with_warning(layout.spatial_shape, net, tile_shape, halo)
    out_shape, out_dtype, _axes = layout_output_spec(net, layout, output)
    target = out if out is not None else np.zeros(out_shape, out_dtype)
    if tuple(target.shape) != out_shape:
        raise UserInputError(
            f"out has shape {tuple(target.shape)}; expected {out_shape} for output={output!r}"
        )
    normalization = input_normalization(net, layout, image)
    devices = resolve_devices(device)
    check_precision(precision, devices[0].type)
    batch_size = resolve_batch(batch_size, devices, tile_memory(net.config, plan.tile_shape))
    frames, per_frame = layout.n_frames, len(plan)
    total = frames * per_frame
    lead = 1 if output == "probabilities" else 0
    kind = "labels" if output == "labels" else "probabilities"
    with device_networks(net, devices) as nets:
        need = format_bytes(tile_memory(net.config, plan.tile_shape, batch_size))
        message = f"{per_frame} tiles of {plan.tile_shape} (~{need} per forward pass)"
        if halo is not None and not net.geometry.with_halo(halo).exact:
            message += f", halo {halo} (approximate near tile borders)"
        if frames > 1:
            message = f"{frames} frames of {message}"
        if len(devices) > 1:
            message += f" on {len(devices)} devices"
        yield Progress("predict", 0, total, message, warning=warning)
        for k, index in enumerate(layout.frames()):
            where = layout.frame_name(index)
            frame_name = f"{name} at {where}" if where else name
            args = (normalization, kind, frame_name, precision)
            prepare, compute = device_stages(nets, devices, *args)
            source = layout.frame(image, index)
            frame_out = layout.frame_out(target, index, lead=lead)
            stages = dict(batch_size=batch_size, prepare=prepare, cropped=True)
            for done in iter_run_plan(source, plan, compute, frame_out, **stages):
                done += k * per_frame
                detail = f" ({where})" if where else ""
                yield Progress("predict", done, total, f"tile {done}/{total}{detail}")
    return target


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

    check_output_kind(output)
    check_output_path(path)
    net = resolve_model(model)
    layout = image_layout(
        image, net, axes=axes, channels=channels, name=kwargs.get("name", "image")
    )
    check_tiling_options(net, kwargs.get("tile_shape"), kwargs.get("batch_size"))
    shape, dtype, out_axes = layout_output_spec(net, layout, output)
    if output == "instances":
        from napari_tiled_unet.postprocess import check_instance_classes

        check_instance_classes(net.config.num_classes)
    with create_output(path, shape, dtype, axes=out_axes, tile=tile) as out:
        if output == "instances":
            scratch = dict(scratch_dir=Path(path).parent, scratch_name=f"{Path(path).name}.classes")
            yield from _iter_local_instances(image, net, layout, out, **scratch, **kwargs)
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
