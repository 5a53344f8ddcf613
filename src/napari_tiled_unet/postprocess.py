"""From stitched class probabilities to semantic or instance label images.

No torch: numpy, scipy and scikit-image only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

LABEL_MODES = ("semantic", "instance", "sparse")
INSTANCE_METHODS = ("components", "watershed")


def labels_from_probabilities(
    probabilities: np.ndarray,
    label_mode: str,
    *,
    method: str = "components",
    min_size: int = 4,
) -> np.ndarray:
    """Turn per-class probabilities into a label image.

    Parameters
    ----------
    probabilities : ndarray of float, shape (C, *spatial)
        Class probabilities (or logits: only their order per pixel matters, except for
        ``method="watershed"``, which reads the interior probability as a landscape).
    label_mode : {"semantic", "sparse", "instance"}
        The mode the model was trained in (``model.metadata["label_mode"]``).
        "semantic" and "sparse": the arg-max class id per pixel. For a sparse-trained model,
        class ``k`` is what was painted as label ``k + 1``. "instance": ``C`` must be 3
        (background, interior, boundary); each object gets its own id.
    method : {"components", "watershed"}
        Instance mode only. Seeds are the connected components of the interior class (pixels
        whose arg-max is "interior"); they grow into the foreground (interior or boundary
        pixels). "components" grows them by geodesic distance; "watershed" grows them along
        descending interior probability, so they meet on the most boundary-like pixels.
        Foreground regions that hold no seed (objects so thin they are all boundary) become
        objects of their own.
    min_size : int
        Instance mode only: seeds and leftover regions smaller than this many pixels are
        dropped (noise).

    Returns
    -------
    ndarray, shape (*spatial)
        "semantic"/"sparse": uint8 class ids (uint16 for more than 256 classes).
        "instance": int32 object ids 1..N, 0 background.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim < 2:
        raise ValueError(f"probabilities must have shape (C, *spatial), got {probabilities.shape}")
    num_classes = probabilities.shape[0]
    if label_mode in ("semantic", "sparse"):
        dtype = np.uint8 if num_classes <= 256 else np.uint16
        return np.argmax(probabilities, axis=0).astype(dtype)
    if label_mode != "instance":
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    if num_classes != 3:
        raise ValueError(
            f"instance mode needs 3 probability channels (background, interior, boundary), "
            f"got {num_classes} (shape {probabilities.shape}); was the model trained with "
            f"label_mode='instance'?"
        )
    if method not in INSTANCE_METHODS:
        raise ValueError(f"method must be one of {INSTANCE_METHODS}, got {method!r}")
    classes = np.argmax(probabilities, axis=0)
    foreground = classes != 0
    ndim = classes.ndim
    structure = ndi.generate_binary_structure(ndim, 1)
    seeds, _ = ndi.label(classes == 1, structure=structure)
    if min_size > 1:
        seeds = _remove_small(seeds, min_size)
    if method == "watershed":
        landscape = -np.asarray(probabilities[1], np.float32)
    else:
        landscape = np.zeros(classes.shape, np.float32)  # flat: growth in order of distance
    labels = watershed(landscape, markers=seeds, mask=foreground, connectivity=1)
    leftover, n_left = ndi.label(foreground & (labels == 0), structure=structure)
    if n_left:
        if min_size > 1:
            leftover = _remove_small(leftover, min_size)
        labels = np.where(leftover > 0, leftover + labels.max(), labels)
    return _relabel(labels).astype(np.int32)


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set objects with fewer than ``min_size`` pixels to 0 (works on any skimage version)."""
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    return np.where(small[labels], 0, labels)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Consecutive ids 1..N in order of first appearance (C order), 0 kept."""
    ids, first = np.unique(labels.ravel(), return_index=True)
    order = ids[np.argsort(first)]
    order = order[order != 0]
    lookup = np.zeros(int(labels.max(initial=0)) + 1, np.int64)
    lookup[order] = np.arange(1, order.size + 1)
    return lookup[labels]
