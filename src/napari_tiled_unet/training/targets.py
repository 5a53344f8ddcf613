"""From user labels to what the network learns: class targets and a mask of annotated pixels."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

from napari_tiled_unet.errors import UserInputError

#: Classes learned in instance mode.
INSTANCE_CLASSES = ("background", "interior", "boundary")
BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
#: Partial instance annotation: 0 = not annotated, :data:`SPARSE_BACKGROUND` = background,
#: every other value = one object.
SPARSE_INSTANCE = "sparse-instance"
#: The background value of "sparse-instance" labels: 1, as in "sparse" mode (where label 1 is
#: the first class, background), and the label napari selects in a new Labels layer; objects
#: then take 2, 3, ... (napari's "new label" key, M, gives each painted object its own).
SPARSE_BACKGROUND = 1
#: Label modes whose network learns background / interior / boundary (and predicts objects).
INSTANCE_MODES = ("instance", SPARSE_INSTANCE)
#: Label modes in which 0 means "not annotated".
SPARSE_MODES = ("sparse", SPARSE_INSTANCE)


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


def sparse_instance_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Three-class target of a partial instance annotation, and the pixels that count.

    Parameters
    ----------
    labels : ndarray of int, shape (*spatial)
        0 = not annotated, :data:`SPARSE_BACKGROUND` (1) = background, every other value = one
        object (whole objects: a painted object's edge is taken as its boundary wherever it
        meets annotated pixels).

    Returns
    -------
    targets : ndarray of int64, shape (*spatial)
        0 background (and not annotated), 1 interior, 2 boundary: an object pixel with a
        (4-/6-connected) neighbour that is annotated and holds another value (another object
        or background), as :func:`instance_targets` marks them in full annotations.
    annotated : ndarray of bool, shape (*spatial)
        The annotated pixels, less the object pixels next to a not-annotated pixel that are
        not boundary by the rule above: whether such a pixel is its object's edge (boundary)
        or inside it (interior) cannot be told, so it does not count.

    Notes
    -----
    Where the labels hold no 0, the targets equal :func:`instance_targets` of the labels with
    background 0, and every pixel counts.
    """
    labels = np.asarray(labels)
    annotated = labels != 0
    objects = annotated & (labels != SPARSE_BACKGROUND)
    edge = np.zeros(labels.shape, bool)  # object pixels next to annotated other values
    unsure = np.zeros(labels.shape, bool)  # object pixels next to not-annotated pixels
    for axis in range(labels.ndim):
        first = [slice(None)] * labels.ndim
        second = [slice(None)] * labels.ndim
        first[axis], second[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(first), tuple(second)
        differ = labels[a] != labels[b]
        for this, other in ((a, b), (b, a)):
            meets = differ & objects[this]
            edge[this] |= meets & annotated[other]
            unsure[this] |= meets & ~annotated[other]
    targets = np.where(objects, np.where(edge, BOUNDARY, INTERIOR), BACKGROUND).astype(np.int64)
    return targets, annotated & ~(unsure & ~edge)


def make_targets(labels: np.ndarray, label_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Class targets and the mask of annotated pixels for one label tile.

    Parameters
    ----------
    labels : ndarray of int, shape (*spatial)
        User labels in the convention of ``label_mode``.
    label_mode : {"semantic", "instance", "sparse", "sparse-instance"}
        "semantic": value = class. "instance": object ids → background / interior / boundary.
        "sparse": 0 = not annotated, value ``k >= 1`` = class ``k - 1``. "sparse-instance":
        0 = not annotated, 1 = background, other values = objects
        (:func:`sparse_instance_targets`).

    Returns
    -------
    targets : ndarray of int64, shape (*spatial)
        Class index per pixel (0 where not annotated).
    annotated : ndarray of bool, shape (*spatial)
        Pixels that count in the loss (all but the 0s of sparse labels; see
        :func:`sparse_instance_targets` for partial instances).
    """
    labels = np.asarray(labels)
    if label_mode == "semantic":
        return labels.astype(np.int64), np.ones(labels.shape, bool)
    if label_mode == "instance":
        return instance_targets(labels).astype(np.int64), np.ones(labels.shape, bool)
    if label_mode == "sparse":
        annotated = labels > 0
        return np.where(annotated, labels.astype(np.int64) - 1, 0), annotated
    if label_mode == SPARSE_INSTANCE:
        return sparse_instance_targets(labels)
    raise UserInputError(
        f"label_mode must be 'semantic', 'instance', 'sparse' or 'sparse-instance', "
        f"got {label_mode!r}"
    )


def model_label_mode(label_mode: str) -> str:
    """The label mode a model trained in ``label_mode`` records: what it predicts.

    A model trained on partial instance annotations ("sparse-instance") is an instance model.
    """
    return "instance" if label_mode == SPARSE_INSTANCE else label_mode


def default_class_names(label_mode: str, num_classes: int) -> list[str]:
    """Names of the network's output classes when the user gives none."""
    if label_mode in INSTANCE_MODES:
        return list(INSTANCE_CLASSES)
    if label_mode == "sparse":
        return [f"label {k + 1}" for k in range(num_classes)]
    return ["background", *(f"class {k}" for k in range(1, num_classes))]
