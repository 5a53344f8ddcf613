"""Classical baseline (Otsu threshold + distance-transform watershed) versus a U-Net, by object F1.

Scores instance segmentations of the held-out images in ``sample_data/eval/`` against their
masks by object-level F1 at IoU >= 0.5: ground-truth and predicted objects are paired one-to-one
by the Hungarian method on their IoU, a pair with IoU >= 0.5 is a true positive, and
``F1 = 2 TP / (n_true + n_pred)``.

The baseline's two parameters (Gaussian sigma and the minimum distance between watershed seeds)
were chosen on ``sample_data/train/`` only (``--tune`` repeats that search); the evaluation
images are never used to choose anything.

Usage::

    python benchmarks/baseline_otsu_watershed.py                 # baseline only
    python benchmarks/baseline_otsu_watershed.py --tune          # re-pick parameters on train/
    python benchmarks/baseline_otsu_watershed.py --model m.pt    # baseline and U-Net side by side
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import relabel_sequential, watershed

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "src" / "napari_tiled_unet" / "sample_data"
IOU_THRESHOLD = 0.5

# Chosen with --tune on sample_data/train/ (mean F1 there); never on the evaluation images.
DEFAULT_SIGMA = 2.0
DEFAULT_MIN_DISTANCE = 13
MIN_SIZE = 30  # px; foreground specks smaller than this are removed before the watershed

SegmentFn = Callable[[np.ndarray], np.ndarray]
Pair = tuple[np.ndarray, np.ndarray]


def load_pairs(folder: Path) -> tuple[list[str], list[Pair]]:
    """Read every ``NAME.tif`` with a ``NAME_labels.tif`` beside it.

    Returns
    -------
    names : list of str
        The image file names, sorted.
    pairs : list of (image, labels)
        ``image`` as stored (2D), ``labels`` the instance masks (2D, 0 = background).
    """
    names, pairs = [], []
    for image_path in sorted(folder.glob("*.tif")):
        if image_path.stem.endswith("_labels"):
            continue
        labels_path = image_path.with_name(f"{image_path.stem}_labels.tif")
        if not labels_path.exists():
            continue
        names.append(image_path.name)
        pairs.append((tifffile.imread(image_path), tifffile.imread(labels_path)))
    if not pairs:
        raise FileNotFoundError(f"no NAME.tif + NAME_labels.tif pairs in {folder}")
    return names, pairs


def segment_otsu_watershed(
    image: np.ndarray,
    sigma: float = DEFAULT_SIGMA,
    min_distance: int = DEFAULT_MIN_DISTANCE,
    min_size: int = MIN_SIZE,
) -> np.ndarray:
    """Split Otsu foreground into nuclei with a watershed on the distance transform.

    Parameters
    ----------
    image : numpy.ndarray, shape (Y, X)
        One fluorescence image, any real dtype.
    sigma : float
        Standard deviation of the Gaussian smoothing, in pixels.
    min_distance : int
        Minimum distance between two watershed seeds (maxima of the distance transform), in
        pixels.
    min_size : int
        Foreground components smaller than this many pixels are dropped.

    Returns
    -------
    numpy.ndarray, shape (Y, X), int32
        Instance labels, 0 = background.
    """
    smooth = ndi.gaussian_filter(image.astype(np.float32), sigma)
    components, _ = ndi.label(smooth > threshold_otsu(smooth))
    areas = np.bincount(components.ravel())
    keep = areas >= min_size
    keep[0] = False
    foreground = ndi.binary_fill_holes(keep[components])
    components, _ = ndi.label(foreground)
    distance = ndi.distance_transform_edt(foreground)
    peaks = peak_local_max(
        distance, min_distance=min_distance, labels=components, exclude_border=False
    )
    markers = np.zeros(image.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=foreground).astype(np.int32)


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every true object with every predicted object.

    Returns
    -------
    numpy.ndarray, shape (n_true, n_pred), float64
        Row ``i`` is the ``i``-th true label in increasing order, column ``j`` likewise.
    """
    if true.shape != pred.shape:
        raise ValueError(f"label images differ in shape: {true.shape} vs {pred.shape}")
    true, _, _ = relabel_sequential(np.asarray(true))
    pred, _, _ = relabel_sequential(np.asarray(pred))
    n_true, n_pred = int(true.max()), int(pred.max())
    joint = true.astype(np.int64).ravel() * (n_pred + 1) + pred.astype(np.int64).ravel()
    overlap = np.bincount(joint, minlength=(n_true + 1) * (n_pred + 1))
    overlap = overlap.reshape(n_true + 1, n_pred + 1).astype(np.float64)
    area_true = overlap.sum(axis=1, keepdims=True)
    area_pred = overlap.sum(axis=0, keepdims=True)
    union = area_true + area_pred - overlap
    return (overlap / np.maximum(union, 1))[1:, 1:]


def object_f1(true: np.ndarray, pred: np.ndarray, iou_threshold: float = IOU_THRESHOLD) -> float:
    """Object-level F1: one-to-one (Hungarian) matching on IoU, a match needs IoU >= threshold.

    Two empty label images score 1.0.
    """
    iou = iou_matrix(true, pred)
    n_true, n_pred = iou.shape
    if n_true + n_pred == 0:
        return 1.0
    if n_true == 0 or n_pred == 0:
        return 0.0
    rows, cols = linear_sum_assignment(iou, maximize=True)
    true_positives = int(np.count_nonzero(iou[rows, cols] >= iou_threshold))
    return 2.0 * true_positives / (n_true + n_pred)


def evaluate(segment_fn: SegmentFn, pairs: Sequence[Pair]) -> list[float]:
    """Object F1 at IoU >= 0.5 of ``segment_fn(image)`` against ``labels``, per pair."""
    return [object_f1(labels, np.asarray(segment_fn(image))) for image, labels in pairs]


SIGMAS = (1.0, 2.0, 3.0)
MIN_DISTANCES = (5, 7, 9, 11, 13, 15, 17)


def tune(
    pairs: Sequence[Pair] | Sequence[Sequence[Pair]],
    sigmas: Sequence[float] = SIGMAS,
    min_distances: Sequence[int] = MIN_DISTANCES,
    log: Callable[[str], None] | None = print,
) -> tuple[float, int, float]:
    """Grid-search sigma and min_distance for the best mean F1 on ``pairs``.

    Parameters
    ----------
    pairs : sequence of (image, labels), or a sequence of such sequences
        Tuning images. Given as groups (one per data source), the score is the mean over groups
        of each group's mean F1, so that every source counts the same however many images it
        has.
    sigmas, min_distances : sequences
        The grid searched.
    log : callable or None
        Called with one line per grid point; None is silent.

    Returns
    -------
    (sigma, min_distance, mean_f1)
    """
    groups = [pairs] if pairs and isinstance(pairs[0][0], np.ndarray) else pairs
    best = (DEFAULT_SIGMA, DEFAULT_MIN_DISTANCE, -1.0)
    for sigma, min_distance in itertools.product(sigmas, min_distances):

        def segment(image, s=sigma, d=min_distance):
            return segment_otsu_watershed(image, s, d)

        mean = float(np.mean([np.mean(evaluate(segment, group)) for group in groups]))
        if log is not None:
            log(f"  sigma={sigma:.1f} min_distance={min_distance:2d}  mean F1 on train {mean:.3f}")
        if mean > best[2]:
            best = (sigma, min_distance, mean)
    return best


def check_library_metric(segment_fn: SegmentFn, pairs: Sequence[Pair]) -> bool | None:
    """Compare :func:`object_f1` with ``napari_tiled_unet.metrics.object_f1`` where that exists.

    Returns None when the library has no such function, else whether both agree on every pair.
    """
    try:
        from napari_tiled_unet.metrics import object_f1 as library_object_f1
    except ImportError:
        return None
    agree = True
    for image, labels in pairs:
        pred = np.asarray(segment_fn(image))
        ours, theirs = object_f1(labels, pred), library_object_f1(labels, pred)
        theirs = float(getattr(theirs, "f1", theirs))
        if not np.isclose(ours, theirs):
            print(f"object F1 disagrees: this script {ours:.4f}, library {theirs:.4f}")
            agree = False
    return agree


def unet_segment_fn(model_path: Path) -> SegmentFn | None:
    """``image -> instances`` through ``napari_tiled_unet.predict``, or None if unavailable."""
    try:
        from napari_tiled_unet import predict
    except (ImportError, AttributeError) as error:
        print(
            f"Cannot score the U-Net: napari_tiled_unet.predict is not available ({error}).",
            file=sys.stderr,
        )
        return None
    if not model_path.exists():
        print(f"Cannot score the U-Net: no model file at {model_path}.", file=sys.stderr)
        return None
    return lambda image: predict(image, model_path, output="instances")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SAMPLE_DATA, help="folder with train/, eval/")
    parser.add_argument("--model", type=Path, help="U-Net model file to score beside the baseline")
    parser.add_argument("--tune", action="store_true", help="re-pick parameters on train/ first")
    args = parser.parse_args(argv)

    sigma, min_distance = DEFAULT_SIGMA, DEFAULT_MIN_DISTANCE
    if args.tune:
        print(f"Tuning the baseline on {args.data / 'train'}:")
        _, train_pairs = load_pairs(args.data / "train")
        sigma, min_distance, train_f1 = tune(train_pairs)
        print(f"chosen: sigma={sigma} min_distance={min_distance} (train mean F1 {train_f1:.3f})")

    names, pairs = load_pairs(args.data / "eval")
    columns: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    columns["baseline F1"] = evaluate(
        lambda image: segment_otsu_watershed(image, sigma, min_distance), pairs
    )
    seconds["baseline"] = time.perf_counter() - start
    agree = check_library_metric(
        lambda image: segment_otsu_watershed(image, sigma, min_distance), pairs
    )
    if agree is not None:
        print(f"napari_tiled_unet.metrics.object_f1 agrees with this script: {agree}")
    status = 0
    if args.model is not None:
        segment = unet_segment_fn(args.model)
        if segment is None:
            status = 1
        else:
            start = time.perf_counter()
            try:
                columns["U-Net F1"] = evaluate(segment, pairs)
                seconds["U-Net"] = time.perf_counter() - start
            except ModuleNotFoundError as error:
                print(
                    f"Cannot score the U-Net: instance output is not available yet ({error}).",
                    file=sys.stderr,
                )
                status = 1

    print(
        f"Object F1 at IoU >= {IOU_THRESHOLD} on {args.data / 'eval'} "
        f"(baseline: Gaussian sigma={sigma}, Otsu, distance-transform watershed, "
        f"min_distance={min_distance})"
    )
    print(f"{'image':<16}" + "".join(f"{name:>14}" for name in columns))
    for i, name in enumerate(names):
        n_true = len(np.unique(pairs[i][1])) - 1
        row = f"{name:<16}" + "".join(f"{values[i]:>14.3f}" for values in columns.values())
        print(f"{row}   ({n_true} nuclei)")
    print(f"{'mean':<16}" + "".join(f"{np.mean(values):>14.3f}" for values in columns.values()))
    for what, value in seconds.items():
        print(f"{what} time: {value:.2f} s")
    if "U-Net F1" in columns:
        ratio = np.mean(columns["U-Net F1"]) / max(np.mean(columns["baseline F1"]), 1e-12)
        print(f"U-Net / baseline mean F1: {ratio:.3f}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
