"""Object sizes measured from instance labels: the median diameter and a minimum size.

Training stores both in the model file (``object_diameter``, ``min_object_size`` of
:class:`~napari_tiled_unet.model.info.ModelInfo`); prediction with ``diameter="auto"``
measures the objects of a first pass the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from napari_tiled_unet.separation import MIN_SIZE_FRACTION


def object_sizes(labels: np.ndarray) -> np.ndarray:
    """Pixel (voxel) count of every object of an instance label image (0 = background)."""
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64, copy=False))[1:]
    return counts[counts > 0]


def equivalent_diameter(sizes: np.ndarray, ndim: int) -> np.ndarray:
    """Diameter in pixels of the disk (2D) or ball (3D) with each of ``sizes`` pixels."""
    sizes = np.asarray(sizes, np.float64)
    if ndim >= 3:
        return np.cbrt(6 * sizes / np.pi)
    return 2 * np.sqrt(sizes / np.pi)


def median_diameter(labels: Iterable[np.ndarray], ndim: int | None = None) -> float | None:
    """Median equivalent diameter of all objects of ``labels`` (None when there are none)."""
    sizes, dims = [], ndim
    for image in labels:
        image = np.asarray(image)
        dims = image.ndim if dims is None else dims
        sizes.append(object_sizes(image))
    sizes = np.concatenate(sizes) if sizes else np.zeros(0)
    if not sizes.size:
        return None
    return float(np.median(equivalent_diameter(sizes, dims or 2)))


def convexity(labels: np.ndarray) -> float | None:
    """Mean solidity (object size / size of its convex hull) of the objects of ``labels``,
    weighted by object size (None when there are none).

    A round nucleus is close to 1; touching nuclei joined into one object lose convexity at
    the neck between them, while pieces of one nucleus joined back do not.
    """
    from skimage.measure import regionprops_table

    table = regionprops_table(np.asarray(labels), properties=("area", "solidity"))
    if not len(table["area"]):
        return None
    return float(np.average(table["solidity"], weights=table["area"]))


def training_object_stats(
    labels: Iterable[np.ndarray], ndim: int, scale: float = 1.0
) -> dict[str, Any]:
    """``object_diameter`` and ``min_object_size`` for a model file, from its training labels.

    Parameters
    ----------
    labels : iterable of ndarray of int
        Instance label images (0 = background, one id per object), each ``ndim``-D.
    ndim : int
        Spatial dimensions of the model (2 or 3).
    scale : float
        The training's scale augmentation (objects magnified by ``[1 / scale, scale]``);
        above 1 the diameter range the model saw is stored too.

    Returns
    -------
    dict
        ``object_diameter`` (median equivalent diameter, pixels) and ``min_object_size``
        (:data:`~napari_tiled_unet.separation.MIN_SIZE_FRACTION` of the median object
        size, pixels); with ``scale > 1`` also ``object_diameter_range`` (1st and 99th
        percentile diameters divided and multiplied by ``scale``); empty when the labels
        hold no object.
    """
    sizes = [object_sizes(image) for image in labels]
    return object_stats(np.concatenate(sizes) if sizes else np.zeros(0), ndim, scale)


def object_stats(sizes: np.ndarray, ndim: int, scale: float = 1.0) -> dict[str, Any]:
    """:func:`training_object_stats` from the objects' pixel counts ``sizes``."""
    if not sizes.size:
        return {}
    diameters = equivalent_diameter(sizes, ndim)
    stats: dict[str, Any] = {
        "object_diameter": round(float(np.median(diameters)), 2),
        "min_object_size": max(round(MIN_SIZE_FRACTION * float(np.median(sizes))), 1),
    }
    if scale > 1:
        low, high = np.percentile(diameters, [1, 99])
        stats["object_diameter_range"] = [
            round(float(low) / scale, 2),
            round(float(high) * scale, 2),
        ]
    return stats
