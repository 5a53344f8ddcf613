"""Augmentation keeps image and labels aligned."""

import numpy as np
import pytest

from napari_tiled_unet.training.augment import Augmentation, elastic_displacement, warp

SIZE = 40


def coordinate_tile():
    """Image channels = the y and x coordinate of each pixel; labels = the same, as integers.

    After any geometric transform, a pixel's image value tells where it was sampled and its label
    where the label was sampled: they agree to within nearest-neighbour rounding (0.5 px).
    """
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = np.stack([yy, xx]).astype(np.float32)
    return image, [yy.astype(np.uint16), xx.astype(np.int32)]


@pytest.mark.parametrize("seed", range(6))
def test_flips_and_rotations_move_image_and_labels_together(seed):
    image, labels = coordinate_tile()
    aug = Augmentation(elastic=False, intensity=False)
    out, (ly, lx) = aug(np.random.default_rng(seed), image, labels)
    np.testing.assert_array_equal(out[0], ly)
    np.testing.assert_array_equal(out[1], lx)
    assert ly.dtype == np.uint16 and lx.dtype == np.int32


def test_transforms_actually_happen():
    image, labels = coordinate_tile()
    aug = Augmentation(elastic=False, intensity=False)
    seen = set()
    for s in range(30):
        _, (ly, lx) = aug(np.random.default_rng(s), image, labels)
        seen.add(ly.tobytes() + lx.tobytes())
    assert len(seen) == 8  # 2 flips x 4 rotations give the 8 symmetries of the square


@pytest.mark.parametrize("seed", range(4))
def test_elastic_warp_keeps_labels_on_their_pixels(seed):
    image, labels = coordinate_tile()
    aug = Augmentation(flips=True, rotations=True, elastic=True, intensity=False)
    out, (ly, lx) = aug(np.random.default_rng(seed), image, labels)
    # Cubic splines reproduce the coordinate ramps exactly away from the mirrored tile border.
    inner = (ly >= 3) & (ly <= SIZE - 4) & (lx >= 3) & (lx <= SIZE - 4)
    assert inner.mean() > 0.5
    assert np.abs(out[0] - ly)[inner].max() <= 0.5 + 0.02
    assert np.abs(out[1] - lx)[inner].max() <= 0.5 + 0.02
    # The deformation is real: most pixels come from somewhere else than a rigid transform.
    rigid, _ = Augmentation(elastic=False, intensity=False)(
        np.random.default_rng(seed), image, labels
    )
    assert np.abs(out - rigid).max() > 3


def test_misaligned_warp_would_be_caught():
    """The alignment check above fails when labels get a different displacement."""
    image, (ly, _) = coordinate_tile()
    a = elastic_displacement(np.random.default_rng(0), (SIZE, SIZE))
    b = elastic_displacement(np.random.default_rng(1), (SIZE, SIZE))
    assert np.abs(warp(image[0], a, order=3) - warp(ly, b, order=0)).max() > 2


def test_labels_keep_their_values_under_elastic_warp():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (SIZE, SIZE)).astype(np.uint8) * 50
    _out, (warped,) = Augmentation(intensity=False)(rng, labels[None].astype(np.float32), [labels])
    assert set(np.unique(warped)) <= set(np.unique(labels))
    assert warped.dtype == np.uint8


def test_elastic_displacement_follows_the_paper():
    rng = np.random.default_rng(0)
    fields = np.stack([elastic_displacement(rng, (33, 33), sigma=10, grid=3) for _ in range(300)])
    assert fields.shape == (300, 2, 33, 33)
    # Grid points (corners, edge centres, centre) carry N(0, 10 px) displacements...
    for y, x in [(0, 0), (16, 16), (32, 16)]:
        assert 8.5 < fields[:, :, y, x].std() < 11.5
    # ... and the field between them is smooth (bicubic): neighbouring pixels differ little.
    assert np.abs(np.diff(fields, axis=-1)).max() < 5


def test_each_switch_off_gives_identity_and_intensity_touches_only_the_image():
    image, labels = coordinate_tile()
    off = Augmentation(flips=False, rotations=False, elastic=False, intensity=False)
    out, (ly, _lx) = off(np.random.default_rng(0), image, labels)
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(ly, labels[0])
    jitter = Augmentation(
        flips=False,
        rotations=False,
        elastic=False,
        intensity=True,
        intensity_scale=0.2,
        intensity_shift=0.5,
    )
    out, (ly, _) = jitter(np.random.default_rng(0), image, labels)
    np.testing.assert_array_equal(ly, labels[0])
    assert not np.allclose(out, image)
    # An affine change per channel: still perfectly correlated with the original.
    assert np.corrcoef(out[0].ravel(), image[0].ravel())[0, 1] > 0.999


def test_non_square_tiles_keep_their_shape():
    image = np.zeros((1, 16, 24), np.float32)
    for seed in range(8):
        out, (lab,) = Augmentation()(
            np.random.default_rng(seed), image, [np.zeros((16, 24), np.uint8)]
        )
        assert out.shape == (1, 16, 24) and lab.shape == (16, 24)
