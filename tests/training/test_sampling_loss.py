"""Tile sampling (lazy, foreground-aware, held-out aware), sparse labels, and the losses."""

import numpy as np
import pytest
import torch
from _train_problems import disc_image

from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.training import scan
from napari_tiled_unet.training.augment import Augmentation
from napari_tiled_unet.training.loss import dice_loss, weighted_cross_entropy
from napari_tiled_unet.training.pairs import make_pair, read_window
from napari_tiled_unet.training.sampler import SampleSettings, TileLayout, TileSampler
from napari_tiled_unet.training.scan import scan_pair

NO_AUGMENTATION = Augmentation(flips=False, rotations=False, elastic=False, intensity=False)


def sampler_for(image, labels, mode, layout, fraction=0.5, augmentation=NO_AUGMENTATION, w0=10.0):
    pair = make_pair(image, labels, "image of 'x'", "labels of 'x'", 2)
    scan_pair(pair, mode, layout.out_shape, Normalization(mode="none"))
    settings = SampleSettings(mode, fraction, None, True, w0, 5.0, augmentation)
    return pair, TileSampler([pair], layout, settings)


def test_read_window_mirrors_outside_the_array():
    array = np.arange(7 * 9).reshape(7, 9)
    np.testing.assert_array_equal(read_window(array, (2, 3), (5, 8)), array[2:5, 3:8])
    padded = np.pad(array, 20, mode="reflect")  # as prediction mirrors
    np.testing.assert_array_equal(read_window(array, (-20, -3), (10, 29)), padded[0:30, 17:49])
    channels = np.stack([array, -array])
    out = read_window(channels, (-2, -2), (3, 3), channel_axis=True)
    np.testing.assert_array_equal(out[1], -padded[18:23, 18:23])


class GuardedArray:
    """An array-like that refuses whole-array conversion and records the largest read."""

    def __init__(self, data, max_pixels):
        self.data, self.max_pixels, self.largest = data, max_pixels, 0
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, index):
        out = self.data[index]
        self.largest = max(self.largest, out.size)
        assert out.size <= self.max_pixels, f"read {out.size} pixels at once"
        return out

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole array was converted")


def test_training_reads_only_windows(monkeypatch):
    from _train_problems import tiny_config

    from napari_tiled_unet import normalization
    from napari_tiled_unet.training import train

    monkeypatch.setattr(scan, "SCAN_PIXELS", 2048)
    monkeypatch.setattr(normalization, "SAMPLE_PIXELS", 2048)
    image, labels = disc_image(size=160, count=20)
    big_image, big_labels = GuardedArray(image, 3000), GuardedArray(labels, 3000)
    model = train(big_image, big_labels, tiny_config(iterations=3, label_mode="instance"))
    assert model.metadata["label_mode"] == "instance"
    assert 0 < big_image.largest <= 3000 and big_labels.largest <= 3000


def test_foreground_sampling_hits_sparse_strokes():
    rng = np.random.default_rng(0)
    image = rng.random((256, 256)).astype(np.float32)
    labels = np.zeros((256, 256), np.uint8)
    labels[40, 30:40] = 1  # two short strokes in a big image
    labels[200:206, 220] = 2
    layout = TileLayout((32, 32), (32, 32), 0)

    def hit_rate(fraction, augmentation):
        _, sampler = sampler_for(image, labels, "sparse", layout, fraction, augmentation)
        rng = np.random.default_rng(1)
        return np.mean([(sampler.sample(rng)[2] > 0).any() for _ in range(60)])

    assert hit_rate(1.0, Augmentation(elastic=False)) == 1.0  # every tile sees strokes
    assert hit_rate(1.0, Augmentation()) > 0.85  # elastic warps may push a few out
    assert hit_rate(0.0, Augmentation()) < 0.3  # uniform placement would mostly miss them


def test_sparse_samples_weight_only_annotated_pixels():
    image, instances = disc_image(size=64, count=4)
    labels = np.zeros(instances.shape, np.uint8)
    labels[instances > 0] = 2
    labels[::5, ::5][instances[::5, ::5] == 0] = 1
    layout = TileLayout((32, 32), (32, 32), 0)
    _pair, sampler = sampler_for(image, labels, "sparse", layout, 1.0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        origin = sampler.sample_origin(rng)[1]
        window = labels[origin[0] : origin[0] + 32, origin[1] : origin[1] + 32]
        sampler.sample_origin = lambda _rng, o=origin: (0, o)
        _x, targets, weights = sampler.sample(rng)
        np.testing.assert_array_equal(weights > 0, window > 0)
        np.testing.assert_array_equal(targets[window > 0], window[window > 0] - 1)
        del sampler.sample_origin


@pytest.mark.parametrize("axis", [0, 1])
def test_samples_align_image_and_labels_through_the_pipeline(axis):
    """Image and labels both hold the pixel's coordinate along ``axis``; after reading,
    mirroring, flips, rotations and elastic warping, each sample's image still equals its
    labels to within nearest-neighbour rounding (valid padding too)."""
    ramp = np.indices((96, 96))[axis]
    image, labels = ramp.astype(np.float32), ramp.astype(np.uint8)
    for layout in (TileLayout((32, 32), (32, 32), 0, 10), TileLayout((44, 44), (4, 4), 20, 10)):
        _, sampler = sampler_for(
            image, labels, "semantic", layout, 0.0, Augmentation(intensity=False)
        )
        rng = np.random.default_rng(axis)
        for _ in range(20):
            x, targets, _ = sampler.sample(rng)
            assert x.shape == (1, *layout.tile_shape) and targets.shape == layout.out_shape
            o = layout.offset
            centre = x[0, o : o + layout.out_shape[0], o : o + layout.out_shape[1]]
            inner = (targets >= 4) & (targets <= 91)  # away from the image's mirror folds
            assert np.abs(centre - targets)[inner].max(initial=0) <= 0.6
            # Whereas a misalignment by a few pixels would be caught.
            shifted = np.abs(centre[3:, 3:] - targets[:-3, :-3])[inner[3:, 3:]]
            if layout.out_shape[0] > 16 and shifted.size:
                assert shifted.mean() > 1


def test_held_out_windows_get_zero_weight():
    image, instances = disc_image(size=96, count=10)
    labels = (instances > 0).astype(np.uint8)
    layout = TileLayout((32, 32), (32, 32), 0)
    pair, sampler = sampler_for(image, labels, "semantic", layout)
    pair.held_out.append((32, 40))
    sampler.sample_origin = lambda rng: (0, (20, 20))
    _, _, weights = sampler.sample(np.random.default_rng(0))
    # Window (20..52, 20..52) overlaps held-out (32..64, 40..72) in rows 12.., cols 20..
    assert not weights[12:, 20:].any()
    assert (weights[:12] > 0).all() and (weights[:, :20] > 0).all()


def test_weighted_cross_entropy_by_hand_and_ignores_zero_weights():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]], requires_grad=True)  # (1, 2, 1, 2)
    targets = torch.tensor([[[0, 0]]])
    weights = torch.tensor([[[3.0, 0.0]]])
    loss = weighted_cross_entropy(logits, targets, weights)
    assert loss.item() == pytest.approx(np.log1p(np.exp(-2.0)))  # only pixel 0 counts
    loss.backward()
    assert torch.all(logits.grad[..., 1] == 0)  # no gradient from the ignored pixel
    # Changing the target of an ignored pixel changes nothing.
    other = weighted_cross_entropy(logits, torch.tensor([[[0, 1]]]), weights)
    assert other.item() == loss.item()
    zero = weighted_cross_entropy(logits, targets, torch.zeros_like(weights))
    assert zero.item() == 0 and zero.requires_grad


def test_dice_loss_is_low_for_a_good_prediction_and_masked():
    targets = torch.tensor([[[0, 1, 1, 0]]])
    good = torch.nn.functional.one_hot(targets, 2).movedim(-1, 1).float() * 20
    bad = -good
    weights = torch.ones(1, 1, 4)
    assert dice_loss(good, targets, weights).item() < 0.01
    assert dice_loss(bad, targets, weights).item() > 0.6
    mask = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    wrong_where_ignored = good.clone()
    wrong_where_ignored[..., 1:] *= -1
    assert dice_loss(wrong_where_ignored, targets, mask).item() < 0.01
