"""Input normalisation stored in model files and applied tile by tile at prediction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_tiled_unet.config import _from_dict

MODES = ("none", "percentile", "fixed")
#: Largest number of pixels read to estimate percentiles of a large image.
SAMPLE_PIXELS = 2**22


@dataclass(frozen=True)
class Normalization:
    """How raw intensities become network input: ``(x - offset) / scale``.

    Parameters
    ----------
    mode : {"none", "percentile", "fixed"}
        "none" passes intensities through as float32; "percentile" maps the ``low`` and ``high``
        percentiles of each image to 0 and 1 (csbdeep-style, robust to outliers); "fixed" uses
        ``offset`` and ``scale`` as given.
    low, high : float
        Percentiles for mode "percentile", in [0, 100].
    offset, scale : float
        Affine parameters for mode "fixed"; ``scale`` must be non-zero.
    """

    mode: str = "percentile"
    low: float = 1.0
    high: float = 99.8
    offset: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Normalization.mode must be one of {MODES}, got {self.mode!r}")
        if not 0 <= self.low < self.high <= 100:
            raise ValueError(
                f"Normalization percentiles must satisfy 0 <= low < high <= 100, got {self.low}, {self.high}"
            )
        if self.scale == 0 or not np.isfinite(self.scale):
            raise ValueError(f"Normalization.scale must be finite and non-zero, got {self.scale}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Normalization:
        return cls(mode="none") if data is None else _from_dict(cls, data)

    def resolve(self, image) -> Normalization:
        """Return a "fixed" (or "none") normalisation with this image's parameters.

        Percentiles are estimated from a strided subsample of at most ``SAMPLE_PIXELS`` pixels,
        so a memory-mapped or lazy image is never read whole.
        """
        if self.mode != "percentile":
            return self
        sample = np.asarray(image[_subsample_slices(image.shape)], dtype=np.float64)
        finite = sample[np.isfinite(sample)]
        if finite.size == 0:
            raise ValueError("the image has no finite values to normalise (all NaN or inf)")
        lo, hi = np.percentile(finite, [self.low, self.high])
        scale = float(hi - lo) if hi > lo else 1.0
        return Normalization(mode="fixed", offset=float(lo), scale=scale)

    def apply(self, tile: np.ndarray) -> np.ndarray:
        """Return ``tile`` as float32 with a resolved normalisation applied."""
        if self.mode == "percentile":
            raise RuntimeError("call resolve(image) before apply(tile)")
        out = np.asarray(tile, dtype=np.float32)
        if self.mode == "fixed":
            out = (out - np.float32(self.offset)) / np.float32(self.scale)
        return out


def _subsample_slices(shape: tuple[int, ...]) -> tuple[slice, ...]:
    total = int(np.prod(shape))
    step = 1
    while total / step ** len(shape) > SAMPLE_PIXELS:
        step += 1
    return tuple(slice(None, None, step) for _ in shape)
