"""The paper's pixel weight map.

Ronneberger et al. (2015), eq. 2::

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

``w_c`` balances class frequencies; ``d1`` and ``d2`` are the distances (pixels) to the border
of the nearest and the second-nearest object. The border term is applied to background pixels
only (as in the paper's Fig. 3d and most re-implementations): it makes the network learn the
thin background gaps that separate touching objects.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as connected_components

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.training.targets import SPARSE_BACKGROUND, SPARSE_INSTANCE

#: Class weights are capped at this value so a class seen on a handful of pixels cannot dominate.
MAX_CLASS_WEIGHT = 100.0


def class_weights(counts: np.ndarray, max_weight: float = MAX_CLASS_WEIGHT) -> np.ndarray:
    """Inverse-frequency class weights ``w_c``.

    Parameters
    ----------
    counts : array of int, shape (C,)
        Pixels of each class in the training labels.
    max_weight : float
        Upper bound of a weight.

    Returns
    -------
    ndarray of float64, shape (C,)
        ``total / (n_present * count_c)``, so that the pixel-weighted mean weight is 1 (before
        capping); 0 for classes with no pixel.
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    if present.any():
        weights[present] = counts.sum() / (present.sum() * counts[present])
    return np.minimum(weights, max_weight)


def object_map(labels: np.ndarray, label_mode: str) -> np.ndarray:
    """The objects the border term separates, as ids (0 = background).

    Instance labels are used as they are; for semantic labels the connected components of the
    non-background pixels are the objects. Sparse scribbles have no objects (all 0). Partial
    instance labels ("sparse-instance") keep their objects; background (1) and not annotated
    (0) become 0.
    """
    labels = np.asarray(labels)
    if label_mode == "instance":
        return labels
    if label_mode == SPARSE_INSTANCE:
        return np.where(labels == SPARSE_BACKGROUND, 0, labels)
    if label_mode == "semantic":
        return connected_components(labels > 0, connectivity=1)
    return np.zeros(labels.shape, np.int32)


def border_weights(
    objects: np.ndarray, w0: float = 10.0, sigma: float = 5.0, cutoff: float | None = None
) -> np.ndarray:
    """The border term ``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` on background pixels.

    Parameters
    ----------
    objects : ndarray of int, shape (*spatial)
        Object ids, 0 = background.
    w0 : float
        Height of the term.
    sigma : float
        Width, in pixels.
    cutoff : float or None
        Distances are computed only up to this many pixels from each object (beyond it the
        term is below ``w0 * exp(-cutoff**2 / (2 sigma**2))`` anyway); None: ``4 * sigma``
        (term < 0.0004 w0), ``inf``: exact everywhere.

    Returns
    -------
    ndarray of float32, shape (*spatial)
        0 on object pixels and wherever fewer than two objects are within reach.

    Notes
    -----
    ``d_i(x)`` is the Euclidean distance from pixel ``x`` to the nearest pixel of object ``i``
    (``scipy.ndimage.distance_transform_edt``); each object is measured in its bounding box
    grown by ``cutoff``, so the cost grows with object count times ``cutoff**ndim``, not with
    object count times image size.
    """
    objects = np.asarray(objects)
    out = np.zeros(objects.shape, np.float32)
    if w0 == 0:
        return out
    if objects.size == 0 or objects.min() < 0:
        raise UserInputError("object ids must be >= 0")
    if int(objects.max()) <= 4 * objects.size:
        dense = objects  # small ids (the usual case): find_objects directly, no sort
    else:
        ids, dense = np.unique(objects, return_inverse=True)
        dense = dense.reshape(objects.shape) + (1 if ids[0] != 0 else 0)
    boxes = ndi.find_objects(dense)
    if sum(box is not None for box in boxes) < 2:
        return out
    reach = 4.0 * sigma if cutoff is None else float(cutoff)
    grow = objects.shape if math.isinf(reach) else (math.ceil(reach),) * objects.ndim
    d1 = np.full(objects.shape, np.inf, np.float32)
    d2 = np.full(objects.shape, np.inf, np.float32)
    for index, box in enumerate(boxes, start=1):
        if box is None:
            continue
        window = tuple(
            slice(max(s.start - g, 0), min(s.stop + g, n))
            for s, g, n in zip(box, grow, objects.shape, strict=True)
        )
        distance = ndi.distance_transform_edt(dense[window] != index).astype(np.float32)
        near, second = d1[window], d2[window]
        np.minimum(second, np.maximum(near, distance), out=second)
        np.minimum(near, distance, out=near)
    total = d1 + d2
    background = (objects == 0) & np.isfinite(total)
    out[background] = w0 * np.exp(-(total[background] ** 2) / (2.0 * sigma**2))
    return out


def weight_map(
    targets: np.ndarray,
    objects: np.ndarray | None,
    class_weight: np.ndarray | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
    annotated: np.ndarray | None = None,
    cutoff: float | None = None,
) -> np.ndarray:
    """The full weight map ``w_c(x) + border term``, zero where not annotated.

    Parameters
    ----------
    targets : ndarray of int, shape (*spatial)
        Class per pixel.
    objects : ndarray of int or None, shape (*spatial)
        Object ids for the border term (see :func:`object_map`); None: no border term.
    class_weight : array of float, shape (C,), or None
        ``w_c`` per class; None: 1 for every class.
    w0, sigma, cutoff
        See :func:`border_weights`.
    annotated : ndarray of bool or None, shape (*spatial)
        Pixels that count; the weight is 0 elsewhere (sparse labels, held-out validation).

    Returns
    -------
    ndarray of float32, shape (*spatial)
    """
    targets = np.asarray(targets)
    if class_weight is None:
        weights = np.ones(targets.shape, np.float32)
    else:
        weights = np.asarray(class_weight, np.float32)[targets]
    if objects is not None and w0 > 0:
        weights += border_weights(objects, w0, sigma, cutoff)
    if annotated is not None:
        weights[~np.asarray(annotated, bool)] = 0
    return weights
