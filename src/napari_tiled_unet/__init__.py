"""Overlap-tile U-Net segmentation for napari, Python and the command line.

The public API is re-exported lazily so that ``import napari_tiled_unet`` loads neither torch
nor Qt nor napari.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "UNet": "napari_tiled_unet.model.unet",
    "UNetConfig": "napari_tiled_unet.config",
    "Normalization": "napari_tiled_unet.normalization",
    "Progress": "napari_tiled_unet.events",
    "predict": "napari_tiled_unet.inference",
    "iter_predict": "napari_tiled_unet.inference",
    "save_model": "napari_tiled_unet.model.modelfile",
    "load_model": "napari_tiled_unet.model.modelfile",
    "ModelFileError": "napari_tiled_unet.model.modelfile",
    "default_model_path": "napari_tiled_unet.model.modelfile",
    "train": "napari_tiled_unet.training",
    "iter_train": "napari_tiled_unet.training",
    "TrainConfig": "napari_tiled_unet.training",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from napari_tiled_unet.config import UNetConfig
    from napari_tiled_unet.events import Progress
    from napari_tiled_unet.inference import iter_predict, predict
    from napari_tiled_unet.model.modelfile import (
        ModelFileError,
        default_model_path,
        load_model,
        save_model,
    )
    from napari_tiled_unet.model.unet import UNet
    from napari_tiled_unet.normalization import Normalization
    from napari_tiled_unet.training import TrainConfig, iter_train, train


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'napari_tiled_unet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
