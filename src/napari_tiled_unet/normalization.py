"""Input normalisation stored in model files and applied tile by tile at prediction."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_tiled_unet.config import dataclass_from_dict
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.io.mapped import read_only_map, release_mapped_pages

MODES = ("none", "percentile", "fixed")
#: Largest number of pixels read to estimate percentiles of a large image.
SAMPLE_PIXELS = 2**22
#: Sampled rows read at a time from a memory-mapped image before its pages are dropped.
SAMPLE_BAND_ROWS = 64


Params = float | tuple[float, ...]


@dataclass(frozen=True)
class Normalization:
    """How raw intensities become network input: ``(x - offset) / scale``, per channel.

    Parameters
    ----------
    mode : {"none", "percentile", "fixed"}
        "none" passes intensities through as float32; "percentile" maps the ``low`` and ``high``
        percentiles of each image to 0 and 1 (csbdeep-style, robust to outliers); "fixed" uses
        ``offset`` and ``scale`` as given.
    low, high : float
        Percentiles for mode "percentile", in [0, 100].
    offset, scale : float or tuple of float
        Affine parameters for mode "fixed": one number for all channels, or one per channel
        (a list or tuple; one entry per model input channel). ``scale`` must be non-zero.
    per_channel : bool
        Mode "percentile": resolve percentiles for each channel on its own (default) rather
        than over all channels together. Model files written before per-channel
        normalisation existed have no such entry and keep their joint percentiles.
    """

    mode: str = "percentile"
    low: float = 1.0
    high: float = 99.8
    offset: Params = 0.0
    scale: Params = 1.0
    per_channel: bool = True

    def __post_init__(self) -> None:
        for name in ("offset", "scale"):
            value = getattr(self, name)
            if isinstance(value, list | tuple | np.ndarray):
                value = tuple(float(v) for v in value)
                if not value:
                    raise UserInputError(f"Normalization.{name} must not be an empty list")
                object.__setattr__(self, name, value)
            elif isinstance(value, np.generic | int):
                object.__setattr__(self, name, float(value))
        if self.mode not in MODES:
            raise UserInputError(f"Normalization.mode must be one of {MODES}, got {self.mode!r}")
        if not 0 <= self.low < self.high <= 100:
            raise UserInputError(
                f"Normalization percentiles must satisfy 0 <= low < high <= 100, got {self.low}, {self.high}"
            )
        for s in _as_tuple(self.scale):
            if s == 0 or not np.isfinite(s):
                raise UserInputError(
                    f"Normalization.scale must be finite and non-zero, got {self.scale}"
                )
        if not all(np.isfinite(o) for o in _as_tuple(self.offset)):
            raise UserInputError(f"Normalization.offset must be finite, got {self.offset}")
        sizes = {len(v) for v in (self.offset, self.scale) if isinstance(v, tuple)}
        if len(sizes) > 1:
            raise UserInputError(
                f"Normalization.offset and scale have different numbers of channels: "
                f"{self.offset} and {self.scale}"
            )

    @property
    def channels(self) -> int | None:
        """Channels of per-channel ``offset``/``scale`` (None: the same for every channel)."""
        for value in (self.offset, self.scale):
            if isinstance(value, tuple):
                return len(value)
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (per-channel values as lists) for model files and JSON."""
        data = dataclasses.asdict(self)
        for name in ("offset", "scale"):
            if isinstance(data[name], tuple):
                data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Normalization:
        """Inverse of :meth:`to_dict`; None gives mode "none".

        A dict without ``per_channel`` (model files from before per-channel normalisation)
        keeps joint percentiles, so old models normalise as they were trained.
        """
        if data is None:
            return cls(mode="none")
        data = dict(data)
        data.setdefault("per_channel", False)
        return dataclass_from_dict(cls, data)

    def resolve(self, image, channel_axis: int | None = None) -> Normalization:
        """Return a "fixed" (or "none") normalisation with this image's parameters.

        Percentiles are estimated from a strided subsample of at most ``SAMPLE_PIXELS`` pixels
        (per channel), so a memory-mapped or lazy image is never read whole.

        Parameters
        ----------
        image : array-like
            The image, e.g. ``(C, *spatial)`` or a lazy view of a whole time series
            (:meth:`napari_tiled_unet.axes.Layout.job`).
        channel_axis : int, optional
            The axis of ``image`` holding channels. With ``per_channel`` and more than one
            channel, each gets its own offset and scale; None (or one channel): one pair for
            the whole image.
        """
        if self.mode != "percentile":
            return self
        try:
            return self._resolve(image, channel_axis)
        finally:
            release_mapped_pages(image)  # the subsample touched pages all over the file

    def _resolve(self, image, channel_axis: int | None) -> Normalization:
        n = 1 if channel_axis is None else int(image.shape[channel_axis])
        if channel_axis is None or (n == 1 and not self.per_channel):
            lo, hi = self._percentiles(_read(image, _subsample_slices(image.shape)), "the image")
            return Normalization(mode="fixed", offset=lo, scale=_scale(lo, hi))
        axis = channel_axis % len(image.shape)
        rest = tuple(n for i, n in enumerate(image.shape) if i != axis)
        slices = _subsample_slices(rest)  # per channel: a length-1 channel axis takes no share
        if not self.per_channel or n == 1:
            key = (*slices[:axis], slice(None), *slices[axis:])
            lo, hi = self._percentiles(_read(image, key), "the image")
            return Normalization(mode="fixed", offset=lo, scale=_scale(lo, hi))
        offsets, scales = [], []
        for c in range(n):
            key = (*slices[:axis], c, *slices[axis:])
            lo, hi = self._percentiles(_read(image, key), f"channel {c} of the image")
            offsets.append(lo)
            scales.append(_scale(lo, hi))
        return Normalization(mode="fixed", offset=tuple(offsets), scale=tuple(scales))

    def _percentiles(self, sample, what: str) -> tuple[float, float]:
        sample = np.asarray(sample, dtype=np.float64)
        finite = sample[np.isfinite(sample)]
        if finite.size == 0:
            raise UserInputError(f"{what} has no finite values to normalise (all NaN or inf)")
        lo, hi = np.percentile(finite, [self.low, self.high])
        return float(lo), float(hi)

    def apply(self, tile: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """Return ``tile`` as float32 with a resolved normalisation applied.

        Parameters
        ----------
        tile : array-like
            E.g. ``(C, *spatial)`` or a batch ``(B, C, *spatial)``.
        channel_axis : int, optional
            The axis of ``tile`` holding channels; needed for per-channel parameters of more
            than one channel.
        """
        if self.mode == "percentile":
            raise RuntimeError("call resolve(image) before apply(tile)")
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.asarray(tile, dtype=np.float32)
            if self.mode != "fixed":
                return out
            result = self._affine(out, channel_axis, np.float32)
            if np.isfinite(result).all():
                return result
            # Finite pixels near the float32 limits (±3e38) overflow (x - offset) or the
            # scale in float32 although their normalised value fits: redo them in float64.
            # What is still not finite afterwards (NaN, inf, > 3.4e38) stays so.
            return self._affine(np.asarray(tile, np.float64), channel_axis, np.float64).astype(
                np.float32
            )

    def _affine(self, x: np.ndarray, channel_axis: int | None, dtype) -> np.ndarray:
        offset = self._broadcast(self.offset, x, channel_axis, dtype)
        scale = self._broadcast(self.scale, x, channel_axis, dtype)
        return (x - offset) / scale

    def _broadcast(self, value: Params, out: np.ndarray, channel_axis: int | None, dtype):
        if not isinstance(value, tuple):
            return dtype(value)
        if len(value) == 1:
            return dtype(value[0])
        if channel_axis is None:
            raise UserInputError(
                f"this normalisation has {len(value)} channels; apply() needs channel_axis"
            )
        axis = channel_axis % out.ndim
        if out.shape[axis] != len(value):
            raise UserInputError(
                f"the normalisation has {len(value)} channels but the image has "
                f"{out.shape[axis]} (shape {out.shape}, channel axis {axis})"
            )
        shape = [1] * out.ndim
        shape[axis] = len(value)
        return np.asarray(value, dtype=dtype).reshape(shape)


def _as_tuple(value: Params) -> tuple[float, ...]:
    return value if isinstance(value, tuple) else (value,)


def _scale(lo: float, hi: float) -> float:
    return float(hi - lo) if hi > lo else 1.0


def _read(image, key: tuple) -> np.ndarray:
    """``image[key]`` (integers and slices), flattened; band by band from a memory map.

    A strided read of a memory-mapped file faults in the pages around every sampled row (the
    kernel maps whole read-ahead blocks), and they stay resident until dropped: read at once,
    the subsample of a 1 GiB TIFF put hundreds of MiB of file pages into the process. Read
    ``SAMPLE_BAND_ROWS`` sampled rows at a time, dropping the pages after each, it stays at
    a few MiB. Other arrays (zarr, dask) are read in one go, so no chunk is decoded twice.
    """
    if read_only_map(image) is None or len(key) < 2:
        return np.asarray(image[key]).ravel()
    shape = tuple(image.shape)
    lead = [
        [k] if isinstance(k, int | np.integer) else range(*k.indices(n))
        for k, n in zip(key[:-2], shape[:-2], strict=True)
    ]
    rows, last = key[-2], key[-1]
    if isinstance(rows, int | np.integer):
        rows = slice(int(rows), int(rows) + 1)
    start, stop, step = rows.indices(shape[-2])
    parts = []
    for index in itertools.product(*lead):
        for first in range(start, stop, step * SAMPLE_BAND_ROWS):
            band = slice(first, min(stop, first + step * SAMPLE_BAND_ROWS), step)
            parts.append(np.asarray(image[(*index, band, last)]).ravel())
            release_mapped_pages(image)
    return np.concatenate(parts) if parts else np.empty(0, image.dtype)


def _subsample_slices(shape: tuple[int, ...]) -> tuple[slice, ...]:
    total = int(np.prod(shape))
    step = 1
    while total / step ** len(shape) > SAMPLE_PIXELS:
        step += 1
    return tuple(slice(None, None, step) for _ in shape)
