"""What an exported bioimage.io package says about itself: defaults a dialog can start from."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_tiled_unet.model.unet import UNet

#: The U-Net paper, cited by every export.
UNET_CITATION = {
    "text": "Ronneberger, Fischer & Brox: U-Net: Convolutional Networks for Biomedical Image "
    "Segmentation. MICCAI 2015.",
    "doi": "10.1007/978-3-319-24574-4_28",
}
#: This package, cited by every export.
PACKAGE_CITATION = {
    "text": "napari-tiled-unet: overlap-tile U-Net segmentation in napari.",
    "url": "https://pypi.org/project/napari-tiled-unet/",
}
#: Licence of an export unless one is given (the bioimage.io model zoo's usual one).
DEFAULT_LICENSE = "CC-BY-4.0"


def default_export_metadata(model: UNet) -> dict[str, Any]:
    """The values :func:`~napari_tiled_unet.bioimageio.export_bioimageio` uses when none are
    given, for a dialog or the command line to show and edit.

    Returns
    -------
    dict
        ``name`` (str), ``description`` (str), ``authors`` (list of ``{"name": ...}``),
        ``license`` (SPDX id), ``cite`` (list of ``{"text", "doi" or "url"}``) and ``tags``;
        all of them validate as a bioimage.io model description.
    """
    config, info = model.config, model.info
    kind = {"instance": "instance", "semantic": "semantic", "sparse": "semantic"}.get(
        info.label_mode or "", "semantic"
    )
    ndim = f"{config.ndim}D"
    classes = ", ".join(info.class_names or ()) or f"{config.num_classes} classes"
    try:
        user = getpass.getuser() or "napari-tiled-unet user"
    except (KeyError, OSError):  # no login name (e.g. a container without a passwd entry)
        user = "napari-tiled-unet user"
    return {
        "name": f"napari-tiled-unet {ndim} U-Net",
        "description": (
            f"A {ndim} U-Net (depth {config.depth}, base {config.base_channels} channels, "
            f"'{config.padding}' padding) for {kind} segmentation ({classes}), trained "
            "with napari-tiled-unet."
        ),
        "authors": [{"name": user}],
        "license": DEFAULT_LICENSE,
        "cite": [dict(UNET_CITATION), dict(PACKAGE_CITATION)],
        "tags": ["unet", "segmentation", f"{config.ndim}d", "napari-tiled-unet", "pytorch"],
    }
