"""Segmentation scores: pixel IoU / F1 per class and object-level F1 by matching instances.

Plain numpy and scipy; no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from napari_tiled_unet.errors import UserInputError


def confusion_matrix(
    target: np.ndarray, prediction: np.ndarray, num_classes: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """Pixel counts per (true class, predicted class).

    Parameters
    ----------
    target, prediction : ndarray of int, same shape
        Class ids in ``[0, num_classes)``.
    num_classes : int
    mask : ndarray of bool or None, same shape
        Pixels to count (e.g. the annotated ones); None counts all.

    Returns
    -------
    ndarray of int64, shape (num_classes, num_classes)
        Row = true class, column = predicted class.
    """
    target, prediction = np.asarray(target), np.asarray(prediction)
    if target.shape != prediction.shape:
        raise UserInputError(
            f"target {target.shape} and prediction {prediction.shape} differ in shape"
        )
    if mask is not None:
        mask = np.asarray(mask, bool)
        target, prediction = target[mask], prediction[mask]
    target = target.astype(np.int64).ravel()
    prediction = prediction.astype(np.int64).ravel()
    if target.size and (
        min(target.min(), prediction.min()) < 0
        or max(target.max(), prediction.max()) >= num_classes
    ):
        raise UserInputError(
            f"class ids must lie in [0, {num_classes}) for num_classes={num_classes}"
        )
    counts = np.bincount(target * num_classes + prediction, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """Intersection over union of each class, shape (C,); NaN for a class absent from both."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def f1_per_class(confusion: np.ndarray) -> np.ndarray:
    """F1 (Dice) score of each class, shape (C,); NaN for a class absent from both."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    total = confusion.sum(0) + confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * tp / total, np.nan)


def mean_score(scores: np.ndarray, classes: Any = None) -> float:
    """Mean of per-class scores over ``classes`` (default all), ignoring NaN; 0 if all NaN."""
    scores = np.asarray(scores, np.float64)
    if classes is not None:
        scores = scores[classes]
    finite = scores[np.isfinite(scores)]
    return float(finite.mean()) if finite.size else 0.0


def pixel_scores(
    target: np.ndarray,
    prediction: np.ndarray,
    num_classes: int,
    mask: np.ndarray | None = None,
    classes: Any = None,
) -> dict[str, Any]:
    """Pixel IoU and F1 per class and their means.

    Parameters
    ----------
    target, prediction : ndarray of int, same shape
    num_classes : int
    mask : ndarray of bool or None
        Pixels to score.
    classes : index or None
        Classes averaged in ``mean_iou`` / ``mean_f1`` (e.g. ``slice(1, None)`` for the
        foreground classes); None averages all.

    Returns
    -------
    dict
        ``iou`` and ``f1`` (float arrays of shape (C,), NaN for absent classes), ``mean_iou``,
        ``mean_f1`` (float).
    """
    confusion = confusion_matrix(target, prediction, num_classes, mask)
    iou, f1 = iou_per_class(confusion), f1_per_class(confusion)
    return {
        "iou": iou,
        "f1": f1,
        "mean_iou": mean_score(iou, classes),
        "mean_f1": mean_score(f1, classes),
    }


@dataclass(frozen=True)
class ObjectMatch:
    """Result of matching predicted objects to true objects.

    Attributes
    ----------
    true_positives : int
        Pairs (true object, predicted object) matched one-to-one with IoU >= threshold.
    false_positives : int
        Predicted objects left unmatched.
    false_negatives : int
        True objects left unmatched.
    mean_matched_iou : float
        Mean IoU of the matched pairs (0 if none).
    """

    true_positives: int
    false_positives: int
    false_negatives: int
    mean_matched_iou: float = 0.0

    @property
    def precision(self) -> float:
        n = self.true_positives + self.false_positives
        return self.true_positives / n if n else 1.0

    @property
    def recall(self) -> float:
        n = self.true_positives + self.false_negatives
        return self.true_positives / n if n else 1.0

    @property
    def f1(self) -> float:
        """``2 TP / (n_true + n_pred)``; 1.0 when both are empty."""
        n = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / n if n else 1.0

    def __add__(self, other: ObjectMatch) -> ObjectMatch:
        """Pool counts of two images (mean IoU weighted by matches)."""
        tp = self.true_positives + other.true_positives
        iou = (
            (
                self.mean_matched_iou * self.true_positives
                + other.mean_matched_iou * other.true_positives
            )
            / tp
            if tp
            else 0.0
        )
        return ObjectMatch(
            tp,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
            iou,
        )

    def to_dict(self) -> dict[str, float]:
        return {
            **dataclasses.asdict(self),
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


def match_objects(
    true_labels: np.ndarray, pred_labels: np.ndarray, iou_threshold: float = 0.5
) -> ObjectMatch:
    """Match objects one-to-one by IoU.

    Candidate pairs are those with IoU >= ``iou_threshold``. Within each connected group of
    candidates the Hungarian method picks the assignment with the most matches, ties broken by
    the largest total IoU; for ``iou_threshold > 0.5`` candidates are already one-to-one. Only
    overlapping objects are ever compared, so memory grows with the pixels, not with
    ``n_true * n_pred``.

    Parameters
    ----------
    true_labels, pred_labels : ndarray of int, same shape
        Object ids, 0 = background; ids need not be consecutive.
    iou_threshold : float
        In (0, 1].

    Returns
    -------
    ObjectMatch
    """
    true_labels, pred_labels = np.asarray(true_labels), np.asarray(pred_labels)
    if true_labels.shape != pred_labels.shape:
        raise UserInputError(
            f"true labels {true_labels.shape} and predicted labels {pred_labels.shape} differ in shape"
        )
    if not 0 < iou_threshold <= 1:
        raise UserInputError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    t_ids, t = np.unique(true_labels, return_inverse=True)
    p_ids, p = np.unique(pred_labels, return_inverse=True)
    t, p = t.ravel(), p.ravel()
    if t_ids[0] != 0:
        t = t + 1
    if p_ids[0] != 0:
        p = p + 1
    n_true, n_pred = int(t.max(initial=0)), int(p.max(initial=0))
    area_true = np.bincount(t, minlength=n_true + 1)
    area_pred = np.bincount(p, minlength=n_pred + 1)
    both = (t > 0) & (p > 0)
    pair_codes, overlap = np.unique(t[both] * (n_pred + 1) + p[both], return_counts=True)
    ti, pi = np.divmod(pair_codes, n_pred + 1)
    iou = overlap / (area_true[ti] + area_pred[pi] - overlap)
    keep = iou >= iou_threshold
    ti, pi, iou = ti[keep], pi[keep], iou[keep]
    matched_iou: list[float] = []
    if ti.size:
        # Connected groups of candidate pairs, solved independently.
        graph = coo_matrix(
            (np.ones(ti.size), (ti - 1, n_true + pi - 1)), shape=(n_true + n_pred,) * 2
        )
        _, group = connected_components(graph, directed=False)
        pair_group = group[ti - 1]
        for g in np.unique(pair_group):
            sel = pair_group == g
            rows, row_index = np.unique(ti[sel], return_inverse=True)
            cols, col_index = np.unique(pi[sel], return_inverse=True)
            if rows.size == 1 or cols.size == 1:
                matched_iou.append(float(iou[sel].max()))
                continue
            # More matches always beats more IoU: every match is worth big + its IoU.
            big = min(rows.size, cols.size) + 1.0
            score = np.zeros((rows.size, cols.size))
            score[row_index, col_index] = big + iou[sel]
            r, c = linear_sum_assignment(score, maximize=True)
            matched_iou.extend(float(v) - big for v in score[r, c] if v > 0)
    tp = len(matched_iou)
    return ObjectMatch(
        tp, n_pred - tp, n_true - tp, float(np.mean(matched_iou)) if matched_iou else 0.0
    )


def object_f1(
    true_labels: np.ndarray, pred_labels: np.ndarray, iou_threshold: float = 0.5
) -> float:
    """Object-level F1 ``2 TP / (n_true + n_pred)`` at IoU >= ``iou_threshold``; 1.0 if both are empty."""
    return match_objects(true_labels, pred_labels, iou_threshold).f1


DSB_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
"""IoU thresholds of the Data Science Bowl 2018 score: 0.5, 0.55, ..., 0.95."""


def average_precision(
    true_labels: np.ndarray,
    pred_labels: np.ndarray,
    thresholds: tuple[float, ...] = DSB_THRESHOLDS,
) -> float:
    """DSB-2018-style average precision of one image: the mean over IoU thresholds ``t`` of
    ``TP(t) / (TP(t) + FP(t) + FN(t))``.

    Matches are found by :func:`match_objects` at each threshold (one-to-one). An image with
    no true and no predicted objects scores 1.0.

    Parameters
    ----------
    true_labels, pred_labels : ndarray of int, same shape
        Object ids, 0 = background.
    thresholds : tuple of float
        IoU thresholds in (0, 1]; default :data:`DSB_THRESHOLDS` (0.5 to 0.95 by 0.05).

    Returns
    -------
    float
        In [0, 1].
    """
    if not thresholds:
        raise UserInputError("average_precision needs at least one IoU threshold")
    scores = []
    for threshold in thresholds:
        match = match_objects(true_labels, pred_labels, threshold)
        n = match.true_positives + match.false_positives + match.false_negatives
        scores.append(match.true_positives / n if n else 1.0)
    return float(np.mean(scores))
