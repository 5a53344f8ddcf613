"""Named training presets: starting points for :class:`~napari_tiled_unet.training.TrainConfig`."""

from __future__ import annotations

from typing import Any

from napari_tiled_unet.config import NetworkSpec
from napari_tiled_unet.errors import UserInputError

#: Preset name -> the TrainConfig fields it sets (the others keep their defaults).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "interactive": {
        "network": NetworkSpec(base_channels=16, depth=3),
        "tile_shape": (192, 192),
        "batch_size": 4,
    },
}
#: The preset names, in the order a widget or ``--help`` lists them.
PRESET_NAMES = tuple(PRESETS)
#: What each preset is for, one line each (for ``--help`` and a widget's tooltip).
PRESET_PURPOSES = {
    "default": "the defaults: base 32, depth 4, tile 256, batch 4",
    "interactive": "base 16, depth 3, tile 192, batch 4: 4-8x the default's steps per second "
    "on a CPU, for training while you annotate",
}


def preset_fields(name: str) -> dict[str, Any]:
    """The fields preset ``name`` sets.

    Raises
    ------
    UserInputError
        If there is no such preset, listing the names.
    """
    if name not in PRESETS:
        raise UserInputError(f"unknown training preset {name!r}; use one of {PRESET_NAMES}")
    return dict(PRESETS[name])
