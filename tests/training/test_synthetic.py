"""The synthetic nuclei generator: deterministic, labelled correctly, with the variety it promises."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.training.synthetic import (
    BACKGROUND_LEVEL,
    NucleiStyle,
    synthetic_nuclei,
    synthetic_nuclei_set,
)


def _touching_ids(labels):
    """Ids of objects that share a border with another object (no background between)."""
    grown = ndi.grey_dilation(labels, size=3)
    return set(np.unique(labels[(grown != labels) & (labels > 0) & (grown > 0)]).tolist())


def test_same_seed_same_image_other_seed_other_image():
    a = synthetic_nuclei((96, 128), seed=3)
    b = synthetic_nuclei((96, 128), seed=3)
    c = synthetic_nuclei((96, 128), seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert a[0].shape == a[1].shape == (96, 128)
    assert a[0].dtype == a[1].dtype == np.uint16


def test_labels_are_connected_numbered_objects_under_bright_signal():
    image, labels = synthetic_nuclei((128, 128), seed=0, style=NucleiStyle(photons=1000))
    ids = np.unique(labels)
    np.testing.assert_array_equal(ids, np.arange(ids.size))  # 0..N, no gaps
    assert ids.size > 10
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        _, pieces = ndi.label(labels[sl] == i)
        assert pieces == 1, f"object {i} is in {pieces} pieces"
    assert image[labels > 0].mean() > 2 * image[labels == 0].mean()


def test_touching_and_elongation_follow_the_style():
    shape = (160, 160)
    crowded = NucleiStyle(touching=0.9, density=0.45, elongation=2.2)
    apart = NucleiStyle(touching=0.0, density=0.15, elongation=1.0)
    _, dense = synthetic_nuclei(shape, seed=1, style=crowded)
    _, sparse = synthetic_nuclei(shape, seed=1, style=apart)
    assert len(_touching_ids(dense)) > 0.4 * dense.max()
    assert len(_touching_ids(sparse)) < 0.2 * sparse.max()

    def max_elongation(labels):
        ratios = []
        for i in range(1, int(labels.max()) + 1):
            ys, xs = np.nonzero(labels == i)
            cut = min(ys.min(), xs.min()) == 0 or max(ys.max(), xs.max()) == shape[0] - 1
            if ys.size < 30 or cut:  # cut by the image border: not its own shape
                continue
            eig = np.linalg.eigvalsh(np.cov(np.stack([ys, xs])))
            ratios.append(np.sqrt(eig[1] / eig[0]))
        return max(ratios)

    assert max_elongation(dense) > 1.6
    assert max_elongation(sparse) < 1.4


def test_noise_follows_the_photon_budget():
    style = dict(texture=0.0, background=0.0, blur=0.0, read_noise=0.0)
    bright, labels = synthetic_nuclei((128, 128), seed=2, style=NucleiStyle(photons=2000, **style))
    dim, _ = synthetic_nuclei((128, 128), seed=2, style=NucleiStyle(photons=20, **style))

    def snr(image):
        return (image[labels > 0].mean() - image[labels == 0].mean()) / image[labels == 0].std()

    assert snr(bright) > 4 * snr(dim)


def test_a_set_draws_different_styles():
    pairs = synthetic_nuclei_set(4, (64, 64), seed=0)
    assert len(pairs) == 4
    assert len({float(np.std(image)) for image, _ in pairs}) == 4
    np.testing.assert_array_equal(pairs[1][0], synthetic_nuclei((64, 64), seed=1)[0])


@pytest.mark.parametrize(
    "kwargs", [dict(radius=(5, 3)), dict(elongation=0.5), dict(touching=2.0), dict(photons=0)]
)
def test_bad_styles_are_refused(kwargs):
    with pytest.raises(UserInputError):
        NucleiStyle(**kwargs)


def test_dimmed_nuclei_are_darker_but_stay_above_the_noise():
    """``dim_share`` dims some nuclei (real stains vary from nucleus to nucleus) and changes
    nothing else: same labels, the other nuclei as bright as before, none lost in the noise."""
    style = NucleiStyle(texture=0.0, background=0.0, blur=0.0, photons=500, read_noise=2.0)
    plain, labels = synthetic_nuclei((160, 160), seed=5, style=style)
    dimmed, same_labels = synthetic_nuclei((160, 160), seed=5, style=style, dim_share=0.5)
    np.testing.assert_array_equal(labels, same_labels)
    ids = np.arange(1, int(labels.max()) + 1)
    offset = 100 + BACKGROUND_LEVEL * style.photons  # the generator's offset and background
    before = ndi.mean(plain.astype(float), labels, ids) - offset
    after = ndi.mean(dimmed.astype(float), labels, ids) - offset
    ratio = after / before
    darker = ratio < 0.85
    assert 0.25 * ids.size < darker.sum() < 0.75 * ids.size
    assert ratio.min() > 0.15
    unchanged = np.abs(ratio - 1) < 0.02  # the others as they were, none brightened
    assert unchanged.sum() >= 0.4 * ids.size and ratio.max() < 1.02
    noise = np.std(plain[labels == 0].astype(float))
    assert after.min() > 1.5 * noise


def test_noisy_images_are_not_dimmed_below_what_can_be_seen():
    style = NucleiStyle(texture=0.0, background=0.0, blur=0.0, photons=10, read_noise=2.0)
    plain, labels = synthetic_nuclei((128, 128), seed=6, style=style)
    dimmed, _ = synthetic_nuclei((128, 128), seed=6, style=style, dim_share=1.0)
    ids = np.arange(1, int(labels.max()) + 1)
    before = ndi.mean(plain.astype(float), labels, ids)
    after = ndi.mean(dimmed.astype(float), labels, ids)
    assert np.median(after - 100) > 0.6 * np.median(before - 100)


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_dim_share_outside_zero_to_one_is_refused(share):
    with pytest.raises(UserInputError, match="dim_share"):
        synthetic_nuclei((64, 64), seed=0, dim_share=share)
