"""The network's forward pass: the per-tile function every scheduler shares, and its setup.

:func:`predict_batch` turns a batch of tiles into class ids or probabilities; the local loop
(:func:`~napari_tiled_unet.inference.iter_predict`) and the dask tasks
(:mod:`napari_tiled_unet.distributed`) both call it, on a network prepared by
:func:`inference_setup` (local) or built once per worker (dask).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from napari_tiled_unet.device import PRECISIONS
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.tiling.plan import Tile

if TYPE_CHECKING:
    import torch

    from napari_tiled_unet.model.unet import UNet


def labels_dtype(num_classes: int) -> np.dtype:
    """The smallest unsigned dtype that holds class ids ``0 .. num_classes - 1``.

    uint8 up to 256 classes, uint16 up to 65,536, uint32 above (a class map stored in too
    small a type would wrap: class 69999 as 4463 in uint16).
    """
    for dtype in (np.uint8, np.uint16, np.uint32):
        if num_classes - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def memory_format(ndim: int) -> torch.memory_format:
    """The channels-last layout for a 2D or 3D network: 1.5–2× faster convolutions on CPU."""
    import torch

    return torch.channels_last if ndim == 2 else torch.channels_last_3d


def check_precision(precision: str, device_type: str) -> None:
    """Raise a UserInputError unless ``precision`` is known and usable on ``device_type``."""
    if precision not in PRECISIONS:
        raise UserInputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "float16" and device_type == "cpu":
        raise UserInputError(
            "precision 'float16' needs a GPU; on the CPU use 'bfloat16' or 'float32'"
        )


@contextlib.contextmanager
def inference_setup(net: UNet, device: torch.device) -> Iterator[UNet]:
    """``net`` in eval mode on ``device`` with channels-last weights; put back as it was after."""
    import torch

    first = next(net.parameters())
    was_training, old_device = net.training, first.device
    net.eval().to(device, memory_format=memory_format(net.config.ndim))
    try:
        yield net
    finally:
        net.to(old_device, memory_format=torch.contiguous_format).train(was_training)


@contextlib.contextmanager
def ieee_float32(device: torch.device) -> Iterator[None]:
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

    Raises
    ------
    UserInputError
        If the batch holds NaN or infinite values, or values too large for the network's
        float32 input once normalised, naming where.
    """
    import torch

    x = normalization.apply(batch, channel_axis=1)
    if not np.isfinite(x).all():
        _raise_not_finite(batch, tiles, name)
    layout = memory_format(x.ndim - 2)
    with torch.inference_mode():
        inputs = torch.from_numpy(x).to(device).contiguous(memory_format=layout)
        if precision == "float32":
            with ieee_float32(device):
                logits = model(inputs)
        else:
            with torch.autocast(device.type, dtype=getattr(torch, precision)):
                logits = model(inputs)
        logits = logits.float()
        if output == "labels":
            return logits.argmax(dim=1).to("cpu").numpy().astype(labels_dtype(logits.shape[1]))
        return torch.softmax(logits, dim=1).to("cpu").numpy()


def _raise_not_finite(batch: np.ndarray, tiles: Sequence[Tile], name: str) -> None:
    """Say why a batch did not normalise to finite float32: NaN/inf pixels, or huge values."""
    region = ", ".join(
        f"{a} {s.start}:{s.stop}"
        for a, s in zip("ZYX"[-len(tiles[0].write) :], tiles[0].write, strict=True)
    )
    raw = np.asarray(batch)
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise UserInputError(
            f"{name} contains NaN or infinite values (near {region}); replace them, e.g. "
            "with numpy.nan_to_num, before predicting"
        )
    largest = float(np.abs(raw.astype(np.float64)).max())
    raise UserInputError(
        f"{name} has values too large for the network's float32 input once normalised "
        f"(|value| up to {largest:.3g} near {region}); rescale the image (e.g. divide it by "
        "a constant) or use a model that normalises with percentiles"
    )


def tile_function(
    model: UNet,
    device: torch.device,
    normalization: Normalization,
    output: str,
    name: str,
    precision: str,
) -> Callable[[np.ndarray, Sequence[Tile]], np.ndarray]:
    """:func:`predict_batch` with everything but the batch and its tiles bound, for
    :func:`~napari_tiled_unet.tiling.stitch.iter_run_plan`."""

    def tile_fn(batch: np.ndarray, tiles: Sequence[Tile]) -> np.ndarray:
        return predict_batch(model, batch, tiles, normalization, output, device, name, precision)

    return tile_fn


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
    layout = memory_format(model.config.ndim)
    with inference_setup(model, dev), torch.inference_mode(), ieee_float32(dev):
        logits = model(torch.from_numpy(padded[None]).to(dev).contiguous(memory_format=layout))
        probs = torch.softmax(logits, dim=1)[0].cpu().numpy()
    return probs[(slice(None), *crop)]
