"""Targets from labels, labels from probabilities, and the scores."""

import numpy as np
import pytest

from napari_tiled_unet.metrics import (
    confusion_matrix,
    f1_per_class,
    iou_per_class,
    match_objects,
    object_f1,
    pixel_scores,
)
from napari_tiled_unet.postprocess import labels_from_probabilities
from napari_tiled_unet.training.targets import instance_targets, make_targets


def touching_squares():
    labels = np.zeros((12, 20), np.int32)
    labels[2:10, 2:10] = 7
    labels[2:10, 10:18] = 3  # touches object 7 along a whole edge
    return labels


def test_instance_targets_separate_touching_objects():
    labels = touching_squares()
    t = instance_targets(labels)
    assert set(np.unique(t)) == {0, 1, 2}
    assert (t[labels == 0] == 0).all()
    # Both sides of the contact are boundary, so the interiors do not touch.
    assert t[5, 9] == 2 and t[5, 10] == 2
    from scipy import ndimage as ndi

    _, n = ndi.label(t == 1)
    assert n == 2


def test_sparse_targets_ignore_zero_and_shift_classes():
    labels = np.array([[0, 1, 2], [3, 0, 1]])
    targets, annotated = make_targets(labels, "sparse")
    np.testing.assert_array_equal(annotated, labels > 0)
    np.testing.assert_array_equal(targets[annotated], labels[annotated] - 1)
    targets, annotated = make_targets(labels, "semantic")
    assert annotated.all() and (targets == labels).all()


def one_hot(classes, n=3):
    return np.eye(n, dtype=np.float32)[classes].transpose(2, 0, 1)


@pytest.mark.parametrize("method", ["components", "watershed"])
def test_instance_round_trip_recovers_touching_objects(method):
    labels = touching_squares()
    probabilities = one_hot(instance_targets(labels))
    out = labels_from_probabilities(probabilities, "instance", method=method, min_size=1)
    assert out.dtype == np.int32
    assert match_objects(labels, out).true_positives == 2
    # Every object pixel is assigned (interiors grown into the boundary), background stays 0.
    np.testing.assert_array_equal(out > 0, labels > 0)
    assert object_f1(labels, out) == 1.0


def test_instance_thin_objects_without_interior_are_kept():
    labels = np.zeros((10, 10), np.int32)
    labels[2, 1:9] = 1  # a 1-px line: all boundary
    out = labels_from_probabilities(one_hot(instance_targets(labels)), "instance", min_size=1)
    assert out.max() == 1 and (out > 0).sum() == 8


def test_semantic_labels_are_argmax_with_small_dtype():
    probabilities = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    out = labels_from_probabilities(probabilities, "semantic")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, probabilities.argmax(0))
    assert labels_from_probabilities(np.zeros((300, 2, 2)), "sparse").dtype == np.uint16
    with pytest.raises(ValueError, match="3 probability channels"):
        labels_from_probabilities(probabilities, "instance")


def test_pixel_scores_by_hand():
    target = np.array([0, 0, 1, 1, 1, 2])
    prediction = np.array([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(target, prediction, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [1, 2, 0], [0, 0, 1]])
    np.testing.assert_allclose(iou_per_class(cm), [1 / 3, 2 / 4, 1])
    np.testing.assert_allclose(f1_per_class(cm), [2 / 4, 4 / 6, 1])
    scores = pixel_scores(target, prediction, 3, mask=target != 2, classes=slice(1, None))
    assert np.isnan(scores["iou"][2])  # class 2 masked away: absent, not 0
    assert scores["mean_iou"] == pytest.approx(0.5)


def test_object_matching_by_hand():
    truth = np.zeros((10, 10), np.int32)
    truth[0:4, 0:4] = 1  # 16 px
    truth[6:10, 6:10] = 2
    pred = np.zeros_like(truth)
    pred[0:4, 0:3] = 5  # IoU 12/16 with object 1
    pred[6:10, 6:8] = 9  # IoU 8/16 = 0.5 with object 2: counts at >= 0.5
    pred[0:2, 7:9] = 4  # false positive
    m = match_objects(truth, pred, 0.5)
    assert (m.true_positives, m.false_positives, m.false_negatives) == (2, 1, 0)
    assert m.mean_matched_iou == pytest.approx((0.75 + 0.5) / 2)
    assert m.f1 == pytest.approx(2 * 2 / (2 + 3))
    assert match_objects(truth, pred, 0.6).true_positives == 1
    assert object_f1(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0


def test_object_matching_is_one_to_one_at_iou_half():
    """Two predictions with IoU exactly 0.5 each with one true object: only one may match."""
    truth = np.zeros((1, 4), np.int32)
    truth[0, 0:2] = 1
    pred = np.array([[1, 2, 0, 0]])
    m = match_objects(truth, pred, 0.5)
    assert (m.true_positives, m.false_positives, m.false_negatives) == (1, 1, 0)
