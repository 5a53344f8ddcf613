"""Training on multichannel images and stacks, named by an axis layout."""

import numpy as np
import pytest
from _train_problems import disc_image, tiny_config

from napari_tiled_unet import predict
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.training import Trainer, train


@pytest.fixture(scope="module")
def discs():
    image, instances = disc_image(size=64, count=5, seed=2)
    return image, (instances > 0).astype(np.uint8)


def test_multichannel_yxc_training_stores_per_channel_normalisation(discs, rng):
    image, labels = discs
    # Channel 1 lives on another intensity scale: per-channel percentiles bring both to 0..1.
    rgb = np.stack([image, rng.random(image.shape) * 1000 + 500], axis=-1).astype(np.float32)
    trainer = Trainer(rgb, labels, tiny_config(iterations=2, validation_every=2), axes="yxc")
    model = trainer.run()
    assert model.config.in_channels == 2 and model.metadata["axes"] == "CYX"
    stored = Normalization.from_dict(model.metadata["normalization"])
    assert stored == Normalization() and stored.per_channel
    resolved = trainer.pairs[0].normalization
    assert len(resolved.offset) == 2 and resolved.offset[1] > 400 > resolved.offset[0]
    # Prediction reuses the stored normalisation, per channel, on the same layout.
    assert predict(rgb, model, axes="YXC").shape == image.shape
    channels_first = np.ascontiguousarray(np.moveaxis(rgb, -1, 0))
    np.testing.assert_array_equal(predict(rgb, model), predict(channels_first, model))


def test_channel_selection_and_inferred_rgb_layout(discs, rng):
    image, labels = discs
    rgb = np.stack([rng.random(image.shape), image, image * 0.5], axis=-1).astype(np.float32)
    model = train(rgb, labels, tiny_config(iterations=1, validation_fraction=0), channels=[1, 2])
    assert model.config.in_channels == 2  # (64, 64, 3) reads as YXC without axes


def test_stacks_become_frames_that_share_one_normalisation(discs):
    image, labels = discs
    movie = np.stack([image, image[::-1], image[:, ::-1]])
    movie_labels = np.stack([labels, labels[::-1], labels[:, ::-1]])
    trainer = Trainer(movie, movie_labels, tiny_config(iterations=1), axes="TYX", names=["movie"])
    assert [p.image_name for p in trainer.pairs] == [f"image of 'movie' at T={t}" for t in range(3)]
    model = trainer.run()
    assert model.config.in_channels == 1
    offsets = {p.normalization.offset for p in trainer.pairs}
    assert len(offsets) == 1  # resolved once over the whole movie
    # Without axes, a stack with a stack of labels is read as Z planes.
    inferred = Trainer(movie, movie_labels, tiny_config(iterations=1))
    assert inferred.pairs[2].labels_name == "labels of pair 0 at Z=2"


def test_layouts_that_do_not_fit_are_explained(discs):
    image, labels = discs
    with pytest.raises(ValueError, match=r"differ in shape.*Other axis layouts considered"):
        Trainer(np.stack([image] * 5, axis=-1), labels[:, :60], tiny_config())
    with pytest.raises(ValueError, match=r"labels have shape \(64, 64\), not the image's"):
        Trainer(np.stack([image] * 2), labels, tiny_config(), axes="TYX")
    with pytest.raises(ValueError, match="axes must be one string or one entry per image"):
        Trainer([image, image], [labels, labels], tiny_config(), axes=["YX"])
