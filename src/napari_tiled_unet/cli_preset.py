"""``napari-tiled-unet train --preset``: a named starting point for the network, tile and batch.

The options a preset sets keep ``TrainConfig``'s defaults in ``--help``; one typed on the command
line (noted by :class:`GivenAction`) wins over the preset.
"""

from __future__ import annotations

import argparse
from typing import Any

from napari_tiled_unet.training.presets import PRESET_NAMES, PRESET_PURPOSES


class GivenAction(argparse.Action):
    """Stores an option's value and notes (in ``namespace.given``) that it was typed."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def add_preset_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--preset`` to the ``train`` parser."""
    parser.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        default=PRESET_NAMES[0],
        help="; ".join(f"{n}: {PRESET_PURPOSES[n]}" for n in PRESET_NAMES)
        + ". Sets --base-channels, --depth, --tile (2D) and --batch, unless they are given "
        "(default: %(default)s)",
    )


def preset_values(args: argparse.Namespace) -> dict[str, Any]:
    """``tile``, ``batch``, ``base_channels`` and ``depth``: as typed, else the preset's.

    ``tile`` is None for a 3D model unless typed (the 3D default applies).
    """
    from napari_tiled_unet.training.config import TrainConfig

    preset = TrainConfig.preset(args.preset)
    given = getattr(args, "given", set())
    values = {
        "tile": preset.tile_shape[-1] if args.ndim == 2 else None,
        "batch": preset.batch_size,
        "base_channels": preset.network.base_channels,
        "depth": preset.network.depth,
    }
    return {name: getattr(args, name) if name in given else v for name, v in values.items()}
