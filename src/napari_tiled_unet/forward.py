"""The network's forward pass: the per-tile function every scheduler shares, and its setup.

:func:`predict_written` turns a batch of raw tiles into the written part of each tile's
class ids or probabilities; the local loop (:func:`~napari_tiled_unet.inference.iter_predict`,
in two stages: :func:`stage_batch` where the tiles are read, :func:`run_staged` where the
network runs) and the dask tasks (:mod:`napari_tiled_unet.distributed`) both call it, on a
network prepared by :func:`inference_setup` (local) or built once per worker (dask). Tiles
stay raw until they are normalised in float32 just before the network (on the device, for an
accelerator); softmax and arg-max run only on the written part of each tile.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

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
    """The network's whole output for a batch of tiles: class ids or probabilities.

    ``batch`` is ``(B, C, *tile_shape)`` as read by
    :func:`~napari_tiled_unet.tiling.stitch.read_tile` for ``tiles``; the result is
    ``(B, *output_tile_shape)`` class ids for ``output="labels"``, or ``(B, num_classes,
    *output_tile_shape)`` float32 softmax for ``output="probabilities"``. The engines use
    :func:`predict_written`, which finishes only the part of each tile that is written;
    arguments and errors as there.
    """
    staged = stage_batch(batch, tiles, normalization, device, name)
    whole = [tuple(slice(None) for _ in tile.crop) for tile in tiles]
    parts = run_staged(model, staged, tiles, normalization, output, device, name, precision, whole)
    return np.stack(parts)


def predict_written(
    model: UNet,
    batch: np.ndarray,
    tiles: Sequence[Tile],
    normalization: Normalization,
    output: str,
    device: torch.device,
    name: str = "image",
    precision: str = "float32",
) -> list[np.ndarray]:
    """The per-tile function: each tile's written part, class ids or probabilities.

    Top-level and free of closures, so the local loop (in two stages:
    :func:`stage_batch` in its reader threads, :func:`run_staged`) and the dask tasks
    (:mod:`napari_tiled_unet.distributed`) share it.

    Parameters
    ----------
    model : UNet
        Prepared by :func:`inference_setup` (eval mode, on ``device``, channels-last).
    batch : ndarray, shape (B, C, *tile_shape)
        The raw tiles (any real dtype) as read by
        :func:`~napari_tiled_unet.tiling.stitch.read_tile` for ``tiles``.
    tiles : sequence of Tile
        Their plan entries: each result is the network output cropped to ``tile.crop``.
    normalization : Normalization
        Resolved (:meth:`Normalization.resolve`): applied in float32, on the host for the CPU
        and on the device otherwise, with the same result.
    output : {"labels", "probabilities"}
        "labels": the arg-max class of the logits (the arg-max of the softmax), as
        :func:`labels_dtype` (uint8 up to 256 classes), ``(*write_shape)`` per tile.
        "probabilities": float32 softmax, ``(num_classes, *write_shape)`` per tile.
    device : torch.device
        Where the network runs.
    name : str
        How to call the image in errors.
    precision : {"float32", "bfloat16", "float16"}
        "bfloat16"/"float16" run the network under ``torch.autocast`` (softmax and arg-max
        in float32).

    Raises
    ------
    UserInputError
        If the batch holds NaN or infinite values, or values too large for the network's
        float32 input once normalised, naming where.
    """
    staged = stage_batch(batch, tiles, normalization, device, name)
    crops = [tile.crop for tile in tiles]
    return run_staged(model, staged, tiles, normalization, output, device, name, precision, crops)


def stage_batch(
    batch: np.ndarray,
    tiles: Sequence[Tile],
    normalization: Normalization,
    device: torch.device,
    name: str = "image",
) -> Any:
    """The host half of :func:`predict_written`, run where the batch is read.

    For the CPU: the batch normalised into float32 (one new array, then in place). For an
    accelerator: the raw batch (its integer dtype: fewer bytes to move), in pinned memory
    on CUDA, normalised on the device by :func:`run_staged` (dtypes other than
    :data:`DEVICE_DTYPES` are normalised on the host).
    """
    batch = np.asarray(batch)
    if device.type == "cpu" or batch.dtype not in DEVICE_DTYPES:
        return _normalised_on_host(batch, tiles, normalization, name)
    return _pinned(np.ascontiguousarray(batch, batch.dtype.newbyteorder("=")), device)


def run_staged(
    model: UNet,
    staged: Any,
    tiles: Sequence[Tile],
    normalization: Normalization,
    output: str,
    device: torch.device,
    name: str,
    precision: str,
    crops: Sequence[tuple[slice, ...]],
) -> list[np.ndarray]:
    """The device half of :func:`predict_written`: the network, then each tile's ``crops``
    part of its output in its final dtype (softmax and arg-max on those parts only)."""
    logits = forward_staged(model, staged, tiles, normalization, device, name, precision)
    return finish(logits, crops, output)


def forward_staged(
    model: UNet,
    staged: Any,
    tiles: Sequence[Tile],
    normalization: Normalization,
    device: torch.device,
    name: str,
    precision: str,
) -> torch.Tensor:
    """The network's float32 logits ``(B, num_classes, *output_tile_shape)`` for a batch made
    by :func:`stage_batch`, on ``device``."""
    import torch

    with torch.inference_mode():
        if isinstance(staged, np.ndarray):  # normalised on the host
            inputs = torch.from_numpy(staged).to(device)
        else:
            inputs = _normalised_on_device(staged, tiles, normalization, device, name)
        inputs = inputs.contiguous(memory_format=memory_format(inputs.ndim - 2))
        if precision == "float32":
            with ieee_float32(device):
                logits = model(inputs)
        else:
            with torch.autocast(device.type, dtype=getattr(torch, precision)):
                logits = model(inputs)
        del inputs
        return logits.float()


def finish(
    logits: torch.Tensor,
    crops: Sequence[tuple[slice, ...]],
    output: str,
    *,
    on_host: bool | None = None,
) -> list[np.ndarray]:
    """Each tile's ``crops`` part of ``logits`` as host arrays in their final dtype: class
    ids (:func:`labels_dtype`) or float32 softmax.

    ``on_host``: the arg-max in numpy (True) or in torch ops where ``logits`` are (False, an
    accelerator's path); None: numpy for CPU tensors.
    """
    import torch

    if on_host is None:
        on_host = logits.device.type == "cpu"
    with torch.inference_mode():
        dtype = labels_dtype(logits.shape[1])
        parts = []
        for i, crop in enumerate(crops):
            part = logits[(i, slice(None), *crop)]
            if output == "labels":
                parts.append(_arg_max(part, dtype, on_host))
            else:
                parts.append(_to_host(torch.softmax(part, dim=0)))
        return parts


#: Raw dtypes sent to an accelerator as they are and normalised there.
DEVICE_DTYPES = tuple(
    np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "int32", "float16", "float32")
)

#: Up to this many classes the arg-max is a loop of comparisons over the class axis (a
#: few elementwise passes); torch's ``argmax`` over a non-innermost axis of a CPU tensor was
#: 6-25x slower (252 ms for a 3 x 1248² tile).
ARGMAX_LOOP_CLASSES = 16


def _arg_max(logits: torch.Tensor, dtype: np.dtype, on_host: bool) -> np.ndarray:
    """Class ids ``(*spatial)`` of the largest of ``logits`` ``(C, *spatial)``, as ``dtype``;
    the first class among equal ones (as ``torch.argmax``)."""
    import torch

    classes = logits.shape[0]
    if classes > ARGMAX_LOOP_CLASSES or dtype != np.uint8:
        return _to_host(logits.argmax(dim=0)).astype(dtype)
    if on_host:  # numpy: no thread team for a few cheap passes
        values = logits.to("cpu").numpy()
        best = values[0].copy()
        ids = np.zeros(best.shape, np.uint8)
        larger = np.empty(best.shape, bool)
        for c in range(1, classes):
            np.greater(values[c], best, out=larger)
            np.maximum(best, values[c], out=best)
            ids[larger] = c
        return ids
    best = logits[0]
    ids = torch.zeros(best.shape, dtype=torch.uint8, device=logits.device)
    for c in range(1, classes):
        ids.masked_fill_(logits[c] > best, c)
        best = torch.maximum(best, logits[c])
    return _to_host(ids)


def _to_host(tensor: torch.Tensor) -> np.ndarray:
    return tensor.numpy() if tensor.device.type == "cpu" else tensor.to("cpu").numpy()


def _affine_parameters(normalization: Normalization, channels: int, ndim: int):
    """``offset`` and ``scale`` as float32, broadcastable over a ``(B, C, *spatial)`` batch:
    the numbers :meth:`Normalization.apply` uses, so the result is bit for bit the same."""
    params = []
    for value in (normalization.offset, normalization.scale):
        if isinstance(value, tuple) and len(value) > 1:
            if len(value) != channels:
                raise UserInputError(
                    f"the normalisation has {len(value)} channels but the image has {channels}"
                )
            params.append(np.asarray(value, np.float32).reshape((1, channels) + (1,) * ndim))
        else:
            params.append(np.float32(value[0] if isinstance(value, tuple) else value))
    return params


def _integer_range_is_finite(normalization: Normalization, dtype: np.dtype, channels: int) -> bool:
    """Whether every value of an integer ``dtype`` normalises to a finite float32: the
    affine map is monotonic, so its two ends decide (no per-pixel check needed)."""
    if dtype.kind not in "iub":
        return False
    info = np.iinfo(dtype) if dtype.kind != "b" else np.iinfo(np.uint8)
    ends = np.array([info.min, info.max], np.float32).reshape(2, 1)
    if normalization.mode != "fixed":
        return True
    offset, scale = _affine_parameters(normalization, channels, 0)
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite((ends - offset) / scale).all())


def _normalised_on_host(
    batch: np.ndarray, tiles: Sequence[Tile], normalization: Normalization, name: str
) -> np.ndarray:
    """:meth:`Normalization.apply` for a batch, without its temporaries; finite, or raises."""
    batch = np.asarray(batch)
    channels = batch.shape[1]
    if normalization.mode == "fixed":
        offset, scale = _affine_parameters(normalization, channels, batch.ndim - 2)
        x = np.empty(batch.shape, np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            # float32(pixel) - offset in one pass (the ufunc casts each pixel first, as
            # astype would), then the division in place: apply()'s arithmetic exactly.
            np.subtract(batch, offset, out=x, dtype=np.float32)
            np.divide(x, scale, out=x)
    elif normalization.mode == "none":
        x = batch.astype(np.float32)
    else:
        raise RuntimeError("resolve the normalisation before predicting")
    if _integer_range_is_finite(normalization, batch.dtype, channels) or np.isfinite(x).all():
        return x
    x = normalization.apply(batch, channel_axis=1)  # its float64 rescue of huge values
    if not np.isfinite(x).all():
        _raise_not_finite(batch, tiles, name)
    return x


# --- accelerators (CUDA, MPS): untested without one; the CPU never takes these paths ---


def _pinned(batch: np.ndarray, device: torch.device):
    """The raw batch as a tensor, page-locked on CUDA so its upload can run asynchronously."""
    import torch

    tensor = torch.from_numpy(batch)
    return tensor.pin_memory() if device.type == "cuda" else tensor


def _normalised_on_device(
    raw: torch.Tensor,
    tiles: Sequence[Tile],
    normalization: Normalization,
    device: torch.device,
    name: str,
) -> torch.Tensor:
    """Upload the raw batch, then normalise it on ``device`` in float32, as on the host."""
    import torch

    channels = raw.shape[1]
    # copy=True: normalised in place below, never in the caller's batch (on the CPU, or for
    # float32 tiles, ``to`` would otherwise hand back the same tensor)
    x = raw.to(device, non_blocking=True).to(torch.float32, copy=True)
    if normalization.mode == "fixed":
        for value, op in zip(
            _affine_parameters(normalization, channels, raw.ndim - 2),
            (x.sub_, x.div_),
            strict=True,
        ):
            op(torch.as_tensor(value, device=device))
    dtype = np.dtype(str(raw.dtype).removeprefix("torch."))
    if _integer_range_is_finite(normalization, dtype, channels) or bool(torch.isfinite(x).all()):
        return x
    host = _normalised_on_host(raw.cpu().numpy(), tiles, normalization, name)  # or raises
    return torch.from_numpy(host).to(device)


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
    """:func:`predict_batch` with everything but the batch and its tiles bound (whole
    output tiles, for :func:`~napari_tiled_unet.tiling.stitch.iter_run_plan`)."""

    def tile_fn(batch: np.ndarray, tiles: Sequence[Tile]) -> np.ndarray:
        return predict_batch(model, batch, tiles, normalization, output, device, name, precision)

    return tile_fn


def tile_stages(
    model: UNet,
    device: torch.device,
    normalization: Normalization,
    output: str,
    name: str,
    precision: str,
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """:func:`predict_written` in its two stages, for
    :func:`~napari_tiled_unet.tiling.stitch.iter_run_plan` (``prepare=``, then
    ``tile_fn=`` with ``cropped=True``): staging runs in the reader threads; on the CPU,
    softmax / arg-max of the written parts (:func:`finish`) in the writer thread."""

    def prepare(batch: np.ndarray, tiles: Sequence[Tile]) -> Any:
        return stage_batch(batch, tiles, normalization, device, name)

    def compute(staged: Any, tiles: Sequence[Tile]) -> Any:
        args = (normalization, device, name, precision)
        logits = forward_staged(model, staged, tiles, *args)
        crops = [tile.crop for tile in tiles]
        if device.type == "cpu":  # host work: the writer thread does it, beside the network
            return functools.partial(finish, logits, crops, output)
        return finish(logits, crops, output)

    return prepare, compute


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
