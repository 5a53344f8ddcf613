"""Prediction at the object size a model was trained on: ``diameter=`` of :func:`iter_predict`.

A model file stores the median diameter of its training objects
(:attr:`~napari_tiled_unet.model.info.ModelInfo.object_diameter`). Given the typical object
diameter of an image (pixels), :func:`iter_predict_rescaled` resamples the image along the
model's spatial axes by ``object_diameter / diameter`` (linear, smoothed first when
shrinking), predicts, and maps the result back onto the image's grid: labels and object ids
by nearest neighbour, probabilities linearly. ``diameter="auto"`` predicts objects once and
measures their median diameter; when it finds none, or differs from the training diameter
by more than :data:`AUTO_TOLERANCE`, it predicts again at half and double size (:data:`PROBE_SCALES`)
and takes the measurement of the scale at which the objects come closest to the training
size (a network shown objects twice its training size may fragment them), then rescales.

The rescaled image and the result are held in memory (one float32 copy of the rescaled
image, plus the result at both scales).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.events import Progress

if TYPE_CHECKING:
    from napari_tiled_unet.axes import Layout
    from napari_tiled_unet.model.unet import UNet

logger = logging.getLogger(__name__)

PROBE_SCALES = (0.5, 2.0)
"""Scales ``diameter="auto"`` also predicts at when the first measurement is off."""

DIAMETER_HELP = (
    "typical object diameter in pixels: the image is rescaled so its objects get the size the "
    "model was trained on (held in memory); auto: measured from a first prediction; off (blank "
    "or 0, the default): no rescaling, though for a model trained with scale augmentation the "
    "splitting of touching objects still follows each image's own object size"
)
"""What ``diameter`` does, for the command line's and the Predict widget's help."""

AUTO_TOLERANCE = 0.2
"""``diameter="auto"`` rescales only when the measured median diameter differs from the
training diameter by more than this fraction (for a model that stores
``object_diameter_range``: only when it lies outside that range)."""


def check_diameter(diameter: Any) -> float | str | None:
    """``diameter`` as a number of pixels, ``"auto"``, or None (off: None, 0, "" or "0").

    Raises
    ------
    UserInputError
        For anything else, saying what is accepted.
    """
    if diameter is None or (isinstance(diameter, str) and diameter.strip() in ("", "0")):
        return None
    if isinstance(diameter, str):
        text = diameter.strip().lower()
        if text == "auto":
            return "auto"
        try:
            diameter = float(text)
        except ValueError:
            raise UserInputError(
                f"diameter must be a typical object diameter in pixels (e.g. 30) or 'auto', "
                f"got {diameter!r}"
            ) from None
    if isinstance(diameter, bool) or not isinstance(diameter, int | float | np.number):
        raise UserInputError(
            f"diameter must be a number of pixels or 'auto', got {type(diameter).__name__}"
        )
    diameter = float(diameter)
    if diameter == 0:
        return None
    if not math.isfinite(diameter) or diameter < 0:
        raise UserInputError(
            f"diameter must be a positive number of pixels (0: off) or 'auto', got {diameter}"
        )
    return diameter


def model_diameter(net: UNet) -> float:
    """The training objects' median diameter stored with ``net``; an error if there is none."""
    value = net.info.object_diameter
    if not value:
        raise UserInputError(
            "this model file stores no training object diameter, so it cannot rescale images "
            "by diameter; predict without a diameter, or train the model again with this "
            "version (instance labels), which stores it"
        )
    return float(value)


def rescaled_shape(layout: Layout, factor: float) -> tuple[int, ...]:
    """The image's shape with the model's spatial axes scaled by ``factor`` (at least 1 px)."""
    shape = list(layout.shape)
    for axis in layout.spatial_axes:
        shape[axis] = max(round(shape[axis] * factor), 1)
    return tuple(shape)


def resample_linear(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``array`` resampled to ``shape`` (float32; linear; Gaussian-smoothed where it shrinks).

    Pixel centres are aligned as in :func:`skimage.transform.resize`; axes whose length
    does not change are left as they are.
    """
    from skimage.transform import resize

    array = np.asarray(array, np.float32)
    if tuple(array.shape) == tuple(shape):
        return array.copy()
    shrinks = any(n < m for n, m in zip(shape, array.shape, strict=True))
    return resize(
        array, shape, order=1, mode="reflect", anti_aliasing=shrinks, preserve_range=True
    ).astype(np.float32, copy=False)


def resample_nearest(array: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``array`` resampled to ``shape`` by nearest neighbour (values and dtype kept)."""
    result = np.asarray(array)
    for axis, (new, old) in enumerate(zip(shape, result.shape, strict=True)):
        if new != old:
            index = np.floor((np.arange(new) + 0.5) * old / new).astype(np.intp)
            result = np.take(result, np.minimum(index, old - 1), axis=axis)
    return result


def measured_diameter(instances: np.ndarray, layout: Layout) -> float | None:
    """Median equivalent diameter of the objects of an instance result (None: no objects).

    Objects are counted frame by frame (ids may repeat across frames).
    """
    from napari_tiled_unet.object_size import equivalent_diameter, object_sizes

    sizes = [
        object_sizes(np.asarray(layout.frame_out(instances, index))) for index in layout.frames()
    ]
    sizes = np.concatenate(sizes) if sizes else np.zeros(0)
    if not sizes.size:
        return None
    return float(np.median(equivalent_diameter(sizes, layout.ndim)))


def iter_predict_rescaled(
    image: Any,
    net: UNet,
    layout: Layout,
    diameter: float | str,
    *,
    output: str,
    **options: Any,
) -> Generator[Progress, None, Any]:
    """Predict ``image`` rescaled so that objects of ``diameter`` px get the model's size.

    Parameters
    ----------
    image : array-like
        The image, in ``layout``; read whole.
    net : UNet
        A model whose file stores ``object_diameter``.
    layout : Layout
        How ``net`` reads ``image``.
    diameter : float or "auto"
        The image's typical object diameter in pixels, or "auto": measured from a first
        prediction of object ids (the model must be instance-trained).
    output : {"labels", "probabilities", "instances"}
    **options
        Further arguments of :func:`~napari_tiled_unet.inference.iter_predict` (tile shape,
        halo, batch size, device, name, precision).

    Yields
    ------
    Progress
        The predictions' events (for "auto", the first pass's, then the second's if any).

    Returns
    -------
    ndarray
        The result, shaped as without rescaling.
    """
    from napari_tiled_unet.inference import iter_predict
    from napari_tiled_unet.postprocess import relabel_in_raster_order

    trained = model_diameter(net)
    diameter = check_diameter(diameter)
    channels = layout.channels
    axes = dict(axes=layout.axes, channels=channels)
    if diameter is None:
        return (yield from iter_predict(image, net, output=output, **axes, **options))
    if diameter == "auto":
        if not net.info.predicts_instances:
            raise UserInputError(
                "diameter 'auto' measures the objects of a first prediction, which needs a "
                "model trained on instance labels; give the diameter in pixels instead"
            )
        first = yield from iter_predict(image, net, output="instances", **axes, **options)
        found = measured_diameter(first, layout)
        if found is None or not _fits(found, trained, net):
            # A network shown objects far from its training size may miss, fragment or
            # merge them, so one measurement can mislead: measure at half and double size
            # too and trust the scale at which the objects look most like the training ones.
            candidates = [] if found is None else [(1.0, found)]
            for scale in PROBE_SCALES:
                resized = resample_linear(image, rescaled_shape(layout, scale))
                probe = yield from iter_predict(resized, net, output="instances", **axes, **options)
                measured = measured_diameter(probe, layout)
                if measured is not None:
                    candidates.append((scale, measured))
            if candidates:
                scale, measured = min(candidates, key=lambda c: abs(math.log(c[1] / trained)))
                found = measured / scale
        keep = found is None or _fits(found, trained, net)
        message = _auto_message(found, trained, rescaled=not keep)
        logger.info(message)
        yield Progress("diameter", 1, 1, message)
        if keep:
            if output != "instances":
                first = yield from iter_predict(image, net, output=output, **axes, **options)
            return first
        diameter = found
    factor = trained / diameter
    shape = rescaled_shape(layout, factor)
    if shape == layout.shape:
        return (yield from iter_predict(image, net, output=output, **axes, **options))
    resized = resample_linear(image, shape)
    result = yield from iter_predict(resized, net, output=output, **axes, **options)
    if output == "probabilities":
        back = resample_linear(result, (result.shape[0], *layout.output_shape))
    elif output == "labels":
        back = resample_nearest(result, layout.output_shape)
    else:
        back = np.zeros(layout.output_shape, np.int32)
        frame_shape = tuple(layout.output_shape[i] for i in _frame_axes(layout))
        for index in layout.frames():  # ids 1..N per frame again (tiny objects may go)
            frame = resample_nearest(layout.frame_out(result, index), frame_shape)
            layout.frame_out(back, index)[...] = relabel_in_raster_order(frame)
    return back


def _fits(found: float, trained: float, net: UNet) -> bool:
    """Whether objects of ``found`` pixels need no rescaling: within the diameters a
    scale-augmented model was trained to see, else within :data:`AUTO_TOLERANCE` of its
    training diameter."""
    trained_range = net.info.object_diameter_range
    if trained_range is not None:
        return trained_range[0] <= found <= trained_range[1]
    return abs(found / trained - 1) <= AUTO_TOLERANCE


def _frame_axes(layout: Layout) -> tuple[int, ...]:
    """Positions, in the output's axes, of the axes of one frame (the spatial ones)."""
    letters = layout.output_axes
    return tuple(i for i, a in enumerate(letters) if a in layout.spatial_letters)


def _auto_message(found: float | None, trained: float, *, rescaled: bool) -> str:
    if found is None:
        return f"diameter auto: no objects found; kept the scale (training {trained:.1f} px)"
    verb = "rescaled" if rescaled else "kept the scale"
    return f"diameter auto: objects measure {found:.1f} px, the model's {trained:.1f} px; {verb}"
