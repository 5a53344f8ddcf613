"""DSB-style average precision (metrics.average_precision)."""

import numpy as np
import pytest

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.metrics import DSB_THRESHOLDS, average_precision


def _two_squares() -> np.ndarray:
    labels = np.zeros((20, 20), np.int32)
    labels[2:8, 2:8] = 1
    labels[10:18, 10:18] = 2
    return labels


def test_average_precision_perfect_empty_and_missing():
    labels = _two_squares()
    assert average_precision(labels, labels) == 1.0
    assert average_precision(labels, np.zeros_like(labels)) == 0.0
    assert average_precision(np.zeros_like(labels), np.zeros_like(labels)) == 1.0


def test_average_precision_counts_each_threshold():
    labels = _two_squares()
    pred = labels.copy()
    pred[2:8, 2:5] = 0  # object 1 keeps half its pixels: IoU exactly 0.5
    # t = 0.5: both matched (1.0); t > 0.5: 1 TP, 1 FP, 1 FN (1/3) at each of 9 thresholds
    assert average_precision(labels, pred) == pytest.approx((1 + 9 / 3) / 10)
    assert len(DSB_THRESHOLDS) == 10 and DSB_THRESHOLDS[-1] == 0.95


def test_average_precision_needs_thresholds():
    with pytest.raises(UserInputError, match="threshold"):
        average_precision(_two_squares(), _two_squares(), thresholds=())
