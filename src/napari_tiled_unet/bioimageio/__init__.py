"""bioimage.io model packages (spec 0.5): export a U-Net, read a package back.

Needs the optional dependencies (``pip install 'napari-tiled-unet[bioimageio]'``); importing
this module does not load them, nor torch.
"""

from __future__ import annotations

from napari_tiled_unet.bioimageio.export import export_bioimageio
from napari_tiled_unet.bioimageio.foreign import ForeignPackage, open_foreign, predict_foreign
from napari_tiled_unet.bioimageio.metadata import default_export_metadata
from napari_tiled_unet.bioimageio.package import PackageError, is_package, load_package

__all__ = [
    "ForeignPackage",
    "PackageError",
    "default_export_metadata",
    "export_bioimageio",
    "is_package",
    "load_package",
    "open_foreign",
    "predict_foreign",
]
