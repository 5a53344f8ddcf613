"""Scale and appearance augmentation: labels stay aligned (scale) or untouched (appearance)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.training.augment import Augmentation, scaled_region
from napari_tiled_unet.training.pairs import make_pair
from napari_tiled_unet.training.sampler import SampleSettings, TileLayout, TileSampler
from napari_tiled_unet.training.scan import scan_pair

GEOMETRY_OFF = dict(flips=False, rotations=False, elastic=False, intensity=False)
APPEARANCE_ONLY = dict(GEOMETRY_OFF, appearance=True)


def coordinate_tile(size):
    yy, xx = np.mgrid[:size, :size]
    return np.stack([yy, xx]).astype(np.float32), [yy.astype(np.uint16), xx.astype(np.int32)]


@pytest.mark.parametrize("elastic", [False, True])
@pytest.mark.parametrize("out", [20, 27, 80])
def test_resampling_keeps_labels_on_their_pixels(elastic, out):
    """Image and labels hold source coordinates; after resampling a 40 px region to ``out`` px
    (with or without elastic warp) both still point to the same source pixel."""
    image, labels = coordinate_tile(40)
    aug = Augmentation(flips=True, rotations=True, elastic=elastic, intensity=False)
    for seed in range(3):
        res, (ly, lx) = aug(np.random.default_rng(seed), image, labels, shape=(out, out))
        assert res.shape == (2, out, out) and ly.shape == lx.shape == (out, out)
        assert ly.dtype == np.uint16 and lx.dtype == np.int32
        inner = (ly >= 4) & (ly <= 35) & (lx >= 4) & (lx <= 35)
        assert inner.mean() > 0.3
        assert np.abs(res[0] - ly)[inner].max() <= 0.5 + 0.05
        assert np.abs(res[1] - lx)[inner].max() <= 0.5 + 0.05
    # The resampled tile spans the whole region: a stretch, not a crop.
    plain, (ly, _) = Augmentation(**GEOMETRY_OFF)(
        np.random.default_rng(0), image, labels, shape=(out, out)
    )
    assert ly.min() <= 1 and ly.max() >= 38
    assert np.corrcoef(plain[0].ravel(), ly.ravel())[0, 1] > 0.999


def test_scale_magnifies_objects_by_the_drawn_factor():
    disc = np.zeros((64, 64), np.uint8)
    disc[(np.indices((64, 64)) - 32).__pow__(2).sum(0) <= 10**2] = 1
    aug = Augmentation(**GEOMETRY_OFF, scale=2.0)
    rng = np.random.default_rng(0)
    factors = [aug.draw_scale(rng) for _ in range(400)]
    assert 0.5 <= min(factors) < 0.6 and 1.8 < max(factors) <= 2.0
    assert abs(np.mean(np.log(factors))) < 0.1  # log-uniform: as much shrinking as growing
    for factor in (0.5, 1.6):
        start, stop = scaled_region((0, 0), (64, 64), factor)
        region = np.pad(disc, 64)[start[0] + 64 : stop[0] + 64, start[1] + 64 : stop[1] + 64]
        _, (out,) = aug(rng, region[None].astype(np.float32), [region], shape=(64, 64))
        assert out.sum() == pytest.approx(disc.sum() * factor**2, rel=0.1)
    # Off: no random draw at all, so other choices stay as they were.
    off = np.random.default_rng(5)
    assert Augmentation().draw_scale(off) == 1.0
    assert off.random() == np.random.default_rng(5).random()


def test_scaled_region_keeps_the_centre_and_z():
    assert scaled_region((10, 20), (74, 84), 2.0) == ((26, 36), (58, 68))
    assert scaled_region((10, 20), (74, 84), 0.5) == ((-22, -12), (106, 116))
    start, stop = scaled_region((0, 0, 0), (8, 64, 64), 0.5)
    assert (start[0], stop[0]) == (0, 8) and stop[1] - start[1] == 128


def test_sampler_with_scale_keeps_alignment_and_held_out_pixels():
    """Through the sampler: a 2x-scaled sample's image (the source row / column) agrees with
    its labels, and no pixel that comes from a held-out validation window gets weight."""
    yy, xx = np.indices((128, 128))
    layout = TileLayout((32, 32), (32, 32), 0, 10)
    aug = Augmentation(flips=True, rotations=True, elastic=True, intensity=False, scale=2.0)
    seen = set()
    for axis, ramp in enumerate((yy, xx)):
        pair = make_pair(ramp.astype(np.float32), ramp.astype(np.uint8), "i", "l", 2)
        scan_pair(pair, "semantic", layout.out_shape, Normalization(mode="none"))
        pair.held_out.append((48, 48))
        sampler = TileSampler(
            [pair], layout, SampleSettings("semantic", 0.0, None, True, 0.0, 5.0, aug)
        )
        rng = np.random.default_rng(1)
        sources = []
        for _ in range(25):
            x, targets, weights = sampler.sample(rng)
            assert x.shape == (1, 32, 32) and targets.shape == weights.shape == (32, 32)
            inner = (targets >= 4) & (targets <= 123)
            assert np.abs(x[0] - targets)[inner].max(initial=0) <= 0.6
            sources.append((x[0], weights))
            seen.add(int(np.ptp(targets)))
        if axis == 0:
            rows = sources
    for (row, weights), (col, _) in zip(rows, sources, strict=True):
        inside = (row > 49) & (row < 79) & (col > 49) & (col < 79)
        assert not weights[inside].any()
    assert min(seen) < 25 and max(seen) > 40  # tiles span about 16 to 64 source pixels


def test_appearance_leaves_labels_untouched_and_changes_the_image():
    rng = np.random.default_rng(0)
    image = ndi.gaussian_filter(rng.random((2, 48, 48)), (0, 3, 3)).astype(np.float32)
    labels = [rng.integers(0, 4, (48, 48)).astype(np.uint16)]
    aug = Augmentation(**APPEARANCE_ONLY)
    changed = 0
    for seed in range(10):
        out, (lab,) = aug(np.random.default_rng(seed), image, labels)
        assert out.shape == image.shape and out.dtype == np.float32
        np.testing.assert_array_equal(lab, labels[0])
        again, _ = aug(np.random.default_rng(seed), image, labels)
        np.testing.assert_array_equal(out, again)  # deterministic by seed
        changed += not np.allclose(out, image)
    assert changed >= 8


def _only(**kwargs):
    ranges = dict(
        gamma=1.0,
        uneven_background=0.0,
        blur=0.0,
        poisson_noise=0.0,
        gaussian_noise=0.0,
        dimming=1.0,
    )
    return Augmentation(**APPEARANCE_ONLY, **{**ranges, **kwargs})


def _apply_until_changed(aug, image):
    for seed in range(20):
        out, _ = aug(np.random.default_rng(seed), image, [])
        if not np.allclose(out, image):
            return out
    raise AssertionError("never applied")


def test_each_appearance_transform_does_what_it_says():
    rng = np.random.default_rng(1)
    image = ndi.gaussian_filter(rng.random((1, 64, 64)), (0, 2, 2)).astype(np.float32)
    image = (image - image.min()) / np.ptp(image)

    def rank(a):
        return np.argsort(np.argsort(a.ravel()))

    out = _apply_until_changed(_only(gamma=3.0), image)  # monotone: order kept, range kept
    np.testing.assert_array_equal(rank(out), rank(image))
    assert out.min() == pytest.approx(image.min(), abs=1e-5)
    assert out.max() == pytest.approx(image.max(), abs=1e-5)

    out = _apply_until_changed(_only(blur=3.0), image)  # less high-frequency energy
    assert np.abs(np.diff(out, axis=-1)).mean() < np.abs(np.diff(image, axis=-1)).mean()

    out = _apply_until_changed(_only(uneven_background=1.0), image)  # smooth, non-negative
    added = out - image
    assert added.min() >= -1e-6 and added.max() > 0.05
    assert np.abs(np.diff(added, axis=-1)).max() < 0.1

    factors = []  # dimming: one factor for the whole tile, in [1/4, 1], spread over it
    for seed in range(40):
        out, _ = _only(dimming=4.0)(np.random.default_rng(seed), image, [])
        factor = out.sum() / image.sum()
        np.testing.assert_allclose(out, image * factor, rtol=1e-5, atol=1e-7)
        factors.append(factor)
    factors = np.array(factors)
    assert factors.min() >= 0.25 - 1e-6 and factors.max() <= 1 + 1e-6
    assert 10 < np.sum(factors < 1 - 1e-6) < 30 and factors.min() < 0.4

    out = _apply_until_changed(_only(gaussian_noise=0.5), image)
    assert 0 < np.std(out - image) < 0.5

    flat = np.full((1, 64, 64), 0.5, np.float32)
    flat[0, 0, 0] = 0  # the tile's darkest pixel is the zero of the photon count
    out = _apply_until_changed(_only(poisson_noise=0.3), flat)
    assert abs(out[0, 1:].mean() - 0.5) < 0.02  # unbiased
    assert out[0, 1:].std() > 0.01


def test_appearance_off_draws_nothing_new():
    """With appearance and scale off, new range settings change nothing: the same seed gives
    the same tile as the plain augmentation."""
    image, labels = coordinate_tile(32)
    plain = Augmentation()
    other = Augmentation(gamma=4.0, blur=3.0, gaussian_noise=1.0, poisson_noise=1.0, dimming=3.0)
    a, la = plain(np.random.default_rng(3), image, labels)
    b, lb = other(np.random.default_rng(3), image, labels)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la[0], lb[0])


def test_dimming_is_drawn_last_so_the_other_draws_are_kept():
    """Dimming only scales the tile that gamma, uneven background and blur made, drawn after
    them: the same seed gives the undimmed tile times one factor (noise and jitter off)."""
    image = ndi.gaussian_filter(np.random.default_rng(2).random((1, 48, 48)), (0, 2, 2))
    image = image.astype(np.float32)
    ranges = dict(gamma=2.0, uneven_background=0.3, blur=1.5, poisson_noise=0.0, gaussian_noise=0.0)
    dimmed = 0
    for seed in range(12):
        plain, _ = Augmentation(**APPEARANCE_ONLY, **ranges)(np.random.default_rng(seed), image, [])
        dim, _ = Augmentation(**APPEARANCE_ONLY, **ranges, dimming=4.0)(
            np.random.default_rng(seed), image, []
        )
        factor = dim.sum() / plain.sum()
        np.testing.assert_allclose(dim, plain * factor, rtol=1e-5, atol=1e-6)
        assert 0.25 - 1e-6 <= factor <= 1 + 1e-6
        dimmed += factor < 1 - 1e-6
    assert 0 < dimmed < 12


def test_dimming_below_one_is_refused():
    with pytest.raises(ValueError, match="dimming"):
        Augmentation(dimming=0.5)
