"""Instance output: the class map of an instance-trained network, then object ids, per frame.

:func:`iter_instances` is the one pipeline behind ``output="instances"`` on every scheduler:
it asks a class-map function (the local tile loop, or the dask graph) for the class map,
in memory or streamed into a scratch zarr store, and labels it frame by frame, block by
block (:func:`~napari_tiled_unet.instances_blockwise.iter_instances_blockwise`; exactly
:func:`~napari_tiled_unet.postprocess.instances_from_classes`), with progress per block.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.events import Progress
from napari_tiled_unet.forward import labels_dtype

if TYPE_CHECKING:
    from napari_tiled_unet.axes import Layout
    from napari_tiled_unet.model.unet import UNet
    from napari_tiled_unet.separation import InstanceOptions

#: ``predict_classes(target)``: a generator that writes the class map of the whole image
#: (``layout.output_shape``) into ``target`` (None: a new numpy array), yields Progress and
#: returns the class map.
ClassMapFunction = Callable[[Any], Generator[Progress, None, Any]]


def iter_instances(
    layout: Layout,
    num_classes: int,
    predict_classes: ClassMapFunction,
    out: Any = None,
    *,
    scratch_dir: str | os.PathLike | None = None,
    scratch_name: str = "classes",
    options: InstanceOptions | None = None,
) -> Generator[Progress, None, Any]:
    """Object ids of an image from its class map, frame by frame; yields Progress, returns them.

    The class map is labelled block by block
    (:func:`~napari_tiled_unet.instances_blockwise.iter_instances_blockwise`, exactly
    :func:`~napari_tiled_unet.postprocess.instances_from_classes`), with progress per block
    and a cancel (closing the generator) honoured at the next block. Without ``out`` the
    class map and the result are held in memory. With ``out`` the class map is streamed
    into a temporary zarr store in a new folder inside ``scratch_dir`` (None: the system's
    temporary folder), removed at the end, also on error, cancel or KeyboardInterrupt;
    memory then stays bounded by what ``predict_classes`` holds, or a block. Objects never
    join across the iterated axes of ``layout``.

    Parameters
    ----------
    layout : Layout
        How the model reads the image; the result has ``layout.output_shape``.
    num_classes : int
        The network's classes (3: background, interior, boundary).
    predict_classes : callable
        See :data:`ClassMapFunction`.
    out : array-like, optional
        Receives the int32 object ids, shaped ``layout.output_shape``.
    scratch_dir, scratch_name
        Where the scratch class map goes (``.SCRATCH_NAME.XXXXXXXX.tmp``).
    options : InstanceOptions, optional
        Separation settings (the model's:
        :meth:`~napari_tiled_unet.separation.InstanceOptions.for_model`); the class map is
        refined window by window (:class:`~napari_tiled_unet.separation.RefinedClasses`),
        exactly as ``labels_from_probabilities(..., options=options)`` does in memory.
        None: the plain rule.

    Yields
    ------
    Progress
        ``predict_classes``' events, then ``stage="instances"`` events over all frames.
    """
    from napari_tiled_unet.postprocess import check_instance_classes

    check_instance_classes(num_classes)
    if out is None:
        classes = yield from predict_classes(None)
        result = np.zeros(layout.output_shape, np.int32)
        return (yield from _iter_label_frames(layout, classes, result, options))
    from napari_tiled_unet.io.store import temporary_array

    shape = layout.output_shape
    if tuple(out.shape) != shape:
        raise UserInputError(
            f"out has shape {tuple(out.shape)}; expected {shape} for output='instances'"
        )
    dtype = labels_dtype(num_classes)
    with temporary_array(scratch_dir, shape, dtype, prefix=scratch_name) as classes:
        yield from predict_classes(classes)
        return (yield from _iter_label_frames(layout, classes, out, options))


def iter_model_instances(
    layout: Layout, net: UNet, predict_classes: ClassMapFunction, out: Any = None, **scratch: Any
) -> Generator[Progress, None, Any]:
    """:func:`iter_instances` with the network's classes and separation settings
    (:meth:`~napari_tiled_unet.separation.InstanceOptions.for_model` of ``net.info``)."""
    from napari_tiled_unet.separation import InstanceOptions

    options = InstanceOptions.for_model(net.info)
    num_classes = net.config.num_classes
    return (
        yield from iter_instances(
            layout, num_classes, predict_classes, out, **scratch, options=options
        )
    )


def _iter_label_frames(
    layout: Layout, classes, out, options: InstanceOptions | None = None
) -> Generator[Progress, None, Any]:
    """Object ids of each frame of the class map ``classes`` into ``out``, block by block:
    one ``stage="instances"`` Progress stream over all frames, cancelled at any block."""
    from napari_tiled_unet.instances_blockwise import iter_instances_blockwise
    from napari_tiled_unet.separation import InstanceOptions, RefinedClasses

    options = InstanceOptions() if options is None else options

    def label_frame(index):
        frame = layout.frame_out(classes, index)
        fitted = options.for_image(frame)  # the same measurement as in memory
        if fitted.refines:
            frame = RefinedClasses(frame, fitted)
        sizes = dict(min_size=fitted.min_seed_size, min_object_size=fitted.min_object_size)
        return iter_instances_blockwise(frame, layout.frame_out(out, index), **sizes)

    frames = list(layout.frames())
    if len(frames) == 1:
        yield from label_frame(frames[0])
        return out
    steps = None
    for k, index in enumerate(frames):
        blockwise = label_frame(index)
        where = layout.frame_name(index)
        for event in blockwise:
            steps = event.total if steps is None else steps
            done = k * steps + event.done
            if k and not event.done:
                continue  # one stream: each frame's opening event is the last one's end
            yield Progress(event.stage, done, steps * len(frames), f"{event.message} ({where})")
    return out
