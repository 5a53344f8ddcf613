"""Frozen, validated configuration objects shared by the engine, the CLI, the widgets and model files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

PADDINGS = ("same", "valid")


def _from_dict(cls, data: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} keys {sorted(unknown)}; expected some of {sorted(names)}"
        )
    return cls(**data)


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`~napari_tiled_unet.model.unet.UNet`.

    Parameters
    ----------
    in_channels : int
        Channels of the input image (1 for a single-channel image).
    num_classes : int
        Output classes (at least 2: background and foreground).
    depth : int
        Number of pooling steps; inputs are processed on a grid of ``2**depth`` pixels.
    base_channels : int
        Feature channels of the first level.
    padding : {"same", "valid"}
        Convolution padding: "same" (tutorial) or "valid" (paper).
    ndim : {2, 3}
        Spatial dimensions.
    anisotropic_levels : int
        For 3D stacks whose Z spacing is coarser than Y/X: the first ``anisotropic_levels``
        levels pool and up-sample only in Y and X (2x2 max pooling and transposed convolution
        over (1, 2, 2) voxels), the later levels in all three axes. With a Z spacing about
        ``2**k`` times the Y/X spacing, ``k`` such levels make the voxels roughly cubic from
        level ``k`` on. Z then sits on a grid of ``2**(depth - anisotropic_levels)`` planes
        instead of ``2**depth``, and needs less context. 0 (the default, and the only value
        for 2D) pools every axis at every level. Between 0 and ``depth``.
    """

    in_channels: int = 1
    num_classes: int = 2
    depth: int = 4
    base_channels: int = 64
    padding: str = "same"
    ndim: int = 2
    anisotropic_levels: int = 0

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "depth", "base_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive integer, got {value!r}")
        if self.num_classes < 2:
            raise ValueError(f"UNetConfig.num_classes must be at least 2, got {self.num_classes}")
        if self.depth > 6:
            raise ValueError(f"UNetConfig.depth must be between 1 and 6, got {self.depth}")
        if self.padding not in PADDINGS:
            raise ValueError(f"UNetConfig.padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.ndim not in (2, 3):
            raise ValueError(f"UNetConfig.ndim must be 2 or 3, got {self.ndim!r}")
        k = self.anisotropic_levels
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= self.depth:
            raise ValueError(
                f"UNetConfig.anisotropic_levels must be an integer between 0 and depth "
                f"({self.depth}), got {k!r}"
            )
        if k and self.ndim != 3:
            raise ValueError(
                f"UNetConfig.anisotropic_levels is for 3D networks (pooling only in Y and X "
                f"while Z is coarse); got {k} with ndim={self.ndim}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict, as stored in model files.

        ``anisotropic_levels`` is left out while it is 0, so files of 2D and isotropic 3D
        networks stay readable by versions that predate it; :meth:`from_dict` fills it in.
        """
        data = dataclasses.asdict(self)
        if not self.anisotropic_levels:
            del data["anisotropic_levels"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        return _from_dict(cls, data)
