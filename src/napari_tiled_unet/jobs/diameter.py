"""What a prediction job with a diameter (:mod:`napari_tiled_unet.rescale`) can and cannot do."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari_tiled_unet.errors import UserInputError

if TYPE_CHECKING:
    from napari_tiled_unet.model.unet import UNet


def check_diameter_job(model: UNet, client: Any, probabilities_path: Any, pyramid: bool) -> None:
    """Refuse, before any work, a diameter the job cannot honour.

    The model must store its training objects' diameter; rescaled prediction runs locally
    with the image in memory, so a dask cluster, probabilities written beside the labels
    and a pyramid are refused (each with what to do instead).
    """
    from napari_tiled_unet.rescale import model_diameter

    model_diameter(model)
    refused = (
        (client is not None, "on a dask cluster"),
        (probabilities_path is not None, "with a probabilities output beside the labels"),
        (pyramid, "into a pyramid"),
    )
    for given, what in refused:
        if given:
            raise UserInputError(
                f"prediction with a diameter does not run {what} yet; predict without the "
                "diameter, or leave that option out"
            )
