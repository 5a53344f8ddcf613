"""The paper's weight map, checked against distances worked out by hand."""

import math

import numpy as np
import pytest

from napari_tiled_unet.training.weights import (
    border_weights,
    class_weights,
    object_map,
    weight_map,
)


def two_discs():
    """Discs of radius 5 centred at (16, 10) and (16, 22): one background pixel, (16, 16),
    separates them on row 16."""
    yy, xx = np.mgrid[:32, :32]
    labels = np.zeros((32, 32), np.int32)
    labels[(yy - 16) ** 2 + (xx - 10) ** 2 <= 25] = 1
    labels[(yy - 16) ** 2 + (xx - 22) ** 2 <= 25] = 2
    return labels


def test_border_term_matches_hand_computed_distances():
    labels = two_discs()
    w = border_weights(labels, w0=10, sigma=5, cutoff=math.inf)
    # (16, 16): d1 = d2 = 1 (the pixels (16, 15) and (16, 17)).
    assert w[16, 16] == pytest.approx(10 * math.exp(-(2**2) / 50), rel=1e-6)
    # (11, 16): nearest disc pixels (13, 14) and (13, 18), both sqrt(8) away.
    assert w[11, 16] == pytest.approx(10 * math.exp(-((2 * math.sqrt(8)) ** 2) / 50), rel=1e-6)
    # (10, 10): disc 1 pixel (11, 10) is 1 away, disc 2 pixel (13, 18) sqrt(73) away.
    assert w[10, 10] == pytest.approx(10 * math.exp(-((1 + math.sqrt(73)) ** 2) / 50), rel=1e-6)
    # Object pixels get no border term.
    assert w[16, 10] == 0 and w[16, 15] == 0 and w[16, 17] == 0


def test_border_term_equals_brute_force_everywhere():
    labels = two_discs()
    w = border_weights(labels, w0=10, sigma=5, cutoff=math.inf)
    pixels = np.indices(labels.shape).reshape(2, -1).T
    d = []
    for k in (1, 2):
        obj = np.argwhere(labels == k)
        d.append(np.sqrt(((pixels[:, None, :] - obj[None]) ** 2).sum(-1)).min(1))
    d1, d2 = np.minimum(*d), np.maximum(*d)
    expected = (10 * np.exp(-((d1 + d2) ** 2) / 50)).reshape(labels.shape)
    expected[labels > 0] = 0
    np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-6)
    # The default cutoff (4 sigma) only drops values below w0 * exp(-8).
    approx = border_weights(labels, w0=10, sigma=5)
    assert np.abs(approx - expected).max() < 10 * math.exp(-8)


def test_full_weight_map_adds_class_weights_and_masks():
    labels = two_discs()
    targets = (labels > 0).astype(np.int64)
    annotated = np.ones(labels.shape, bool)
    annotated[0, :] = False
    w = weight_map(
        targets,
        labels,
        class_weight=np.array([1.0, 3.0]),
        w0=10,
        sigma=5,
        annotated=annotated,
        cutoff=math.inf,
    )
    assert w[16, 16] == pytest.approx(1 + 10 * math.exp(-4 / 50), rel=1e-6)
    assert w[16, 10] == pytest.approx(3.0)  # inside a disc: w_c only
    assert np.all(w[0] == 0)
    assert w.dtype == np.float32


def test_border_term_needs_two_objects_and_arbitrary_ids():
    labels = two_discs()
    one = np.where(labels == 2, 0, labels)
    assert not border_weights(one).any()
    # Object ids need not be consecutive, and a label image without background works.
    relabelled = np.where(labels == 2, 70000, labels).astype(np.int64)
    np.testing.assert_allclose(border_weights(relabelled), border_weights(labels))
    assert not border_weights(np.full((8, 8), 3)).any()


def test_class_weights_balance_frequencies():
    w = class_weights([900, 100, 0])
    assert w[2] == 0
    assert w[0] * 900 == pytest.approx(w[1] * 100)  # each present class gets the same total
    assert (w[:2] * [900, 100]).sum() == pytest.approx(1000)  # mean pixel weight 1


def test_semantic_objects_are_connected_components():
    labels = two_discs().clip(0, 1)  # one class: the discs are not separated by id
    objects = object_map(labels, "semantic")
    assert objects.max() == 2  # but they are by the background pixel between them
    assert object_map(labels, "sparse").max() == 0
