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
    """

    in_channels: int = 1
    num_classes: int = 2
    depth: int = 4
    base_channels: int = 64
    padding: str = "same"
    ndim: int = 2

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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        return _from_dict(cls, data)
