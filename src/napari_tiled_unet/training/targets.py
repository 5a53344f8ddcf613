"""From user labels to what the network learns: class targets and a mask of annotated pixels."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

from napari_tiled_unet.errors import UserInputError

#: Classes learned in instance mode.
INSTANCE_CLASSES = ("background", "interior", "boundary")
BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


def instance_targets(instances: np.ndarray) -> np.ndarray:
    """Three-class target of an instance label image.

    Parameters
    ----------
    instances : ndarray of int, shape (*spatial)
        Object ids, 0 = background. Touching objects must have different ids.

    Returns
    -------
    ndarray of uint8, shape (*spatial)
        0 background, 1 object interior, 2 object boundary: the object pixels that touch
        (4-/6-connected) another value, background or another object. Between two touching
        objects the boundary is therefore two pixels wide, and their interiors never touch.
    """
    instances = np.asarray(instances)
    out = (instances != 0).astype(np.uint8)
    out[find_boundaries(instances, connectivity=1, mode="inner") & (instances != 0)] = BOUNDARY
    return out


def make_targets(labels: np.ndarray, label_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Class targets and the mask of annotated pixels for one label tile.

    Parameters
    ----------
    labels : ndarray of int, shape (*spatial)
        User labels in the convention of ``label_mode``.
    label_mode : {"semantic", "instance", "sparse"}
        "semantic": value = class. "instance": object ids → background / interior / boundary.
        "sparse": 0 = not annotated, value ``k >= 1`` = class ``k - 1``.

    Returns
    -------
    targets : ndarray of int64, shape (*spatial)
        Class index per pixel (0 where not annotated).
    annotated : ndarray of bool, shape (*spatial)
        Pixels that count in the loss (all but the 0s of sparse labels).
    """
    labels = np.asarray(labels)
    if label_mode == "semantic":
        return labels.astype(np.int64), np.ones(labels.shape, bool)
    if label_mode == "instance":
        return instance_targets(labels).astype(np.int64), np.ones(labels.shape, bool)
    if label_mode == "sparse":
        annotated = labels > 0
        return np.where(annotated, labels.astype(np.int64) - 1, 0), annotated
    raise UserInputError(
        f"label_mode must be 'semantic', 'instance' or 'sparse', got {label_mode!r}"
    )


def default_class_names(label_mode: str, num_classes: int) -> list[str]:
    """Names of the network's output classes when the user gives none."""
    if label_mode == "instance":
        return list(INSTANCE_CLASSES)
    if label_mode == "sparse":
        return [f"label {k + 1}" for k in range(num_classes)]
    return ["background", *(f"class {k}" for k in range(1, num_classes))]
