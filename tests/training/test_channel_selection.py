"""A training run's channel selection is stored in the model file and reused at prediction."""

import numpy as np
import pytest
from _train_problems import disc_image, tiny_config

from napari_tiled_unet import load_model, predict, save_model
from napari_tiled_unet.training import Trainer, train


@pytest.fixture(scope="module")
def three_channels():
    """A (3, 64, 64) image whose discs are in channels 2 and 0, and its labels."""
    image, instances = disc_image(size=64, count=5, seed=2)
    noise = np.random.default_rng(1).random(image.shape) * 100
    stack = np.stack([image * 0.5, noise, image * 1000 + 7]).astype(np.float32)
    return stack, (instances > 0).astype(np.uint8)


@pytest.fixture(scope="module")
def selected_model(three_channels, tmp_path_factory):
    """A model trained on channels [2, 0] of the 3-channel image, saved and loaded back."""
    image, labels = three_channels
    model = train(image, labels, tiny_config(iterations=2, validation_fraction=0), channels=[2, 0])
    return save_model(model, tmp_path_factory.mktemp("models") / "selected.pt")


def test_selection_is_stored_and_applied_at_prediction(three_channels, selected_model):
    image, _ = three_channels
    model = load_model(selected_model)
    assert model.config.in_channels == 2
    assert model.metadata["channels"] == [2, 0] and model.metadata["source_channels"] == 3
    expected = predict(image, model, channels=[2, 0], output="probabilities", device="cpu")
    stored = predict(image, model, output="probabilities", device="cpu")
    np.testing.assert_array_equal(stored, expected)
    preselected = np.ascontiguousarray(image[[2, 0]])
    np.testing.assert_array_equal(
        predict(preselected, model, output="probabilities", device="cpu"), expected
    )
    # Channels last (YXC) and an explicit, other selection.
    np.testing.assert_array_equal(
        predict(np.moveaxis(image, 0, -1), selected_model, output="probabilities", device="cpu"),
        expected,
    )
    other = predict(image, model, channels=[1, 0], output="probabilities", device="cpu")
    np.testing.assert_array_equal(
        other, predict(image[[1, 0]], model, output="probabilities", device="cpu")
    )
    assert not np.array_equal(other, expected)


def test_model_files_without_a_selection_behave_as_before(three_channels, selected_model, tmp_path):
    image, _ = three_channels
    model = load_model(selected_model)
    model.info = model.info.replace(channels=None, source_channels=None)
    old = load_model(save_model(model, tmp_path / "old.pt"))
    assert "channels" not in old.metadata
    with pytest.raises(ValueError, match="3 channels, the model takes 2"):
        predict(image, old, device="cpu")
    np.testing.assert_array_equal(
        predict(image, old, channels=[2, 0], device="cpu"),
        predict(image, selected_model, device="cpu"),
    )


def test_mismatched_channels_name_the_stored_selection(three_channels, selected_model):
    image, _ = three_channels
    four = np.concatenate([image, image[:1]])
    with pytest.raises(ValueError) as info:
        predict(four, selected_model, device="cpu")
    message = str(info.value)
    assert "4 channels, the model takes 2" in message
    assert "trained on channels [2, 0] of 3-channel images" in message
    assert "channels=[...]" in message and "--channels" in message
    assert predict(four, selected_model, channels=[2, 0], device="cpu").shape == image.shape[1:]


def test_without_a_selection_nothing_is_stored(three_channels):
    image, labels = three_channels
    model = train(image, labels, tiny_config(iterations=1, validation_fraction=0))
    assert model.config.in_channels == 3
    assert model.info.channels is None and model.info.source_channels is None


def test_fine_tuning_keeps_or_replaces_the_selection(three_channels, selected_model):
    image, labels = three_channels
    config = tiny_config(iterations=1, validation_fraction=0)
    # Without channels: 3-channel images are read through the stored selection, as at
    # prediction; pre-selected images as they are. The selection is kept.
    trainer = Trainer([image, image[[2, 0]]], [labels, labels], config, model=selected_model)
    assert [p.channels for p in trainer.pairs] == [2, 2]
    np.testing.assert_array_equal(trainer.pairs[0].image[...], image[[2, 0]])
    tuned = trainer.run()
    assert tuned.metadata["channels"] == [2, 0] and tuned.metadata["source_channels"] == 3
    # With channels: the new selection, from images of another channel count, is stored.
    four = np.concatenate([image, image[:1]])
    tuned = train(four, labels, config, model=selected_model, channels=[3, 2])
    assert tuned.metadata["channels"] == [3, 2] and tuned.metadata["source_channels"] == 4
    np.testing.assert_array_equal(
        predict(four, tuned, device="cpu"), predict(four, tuned, channels=[3, 2], device="cpu")
    )


def test_images_of_different_channel_counts_store_no_source_count(three_channels):
    image, labels = three_channels
    four = np.concatenate([image, image[:1]])
    config = tiny_config(iterations=1, validation_fraction=0)
    model = train([image, four], [labels, labels], config, channels=[2, 0])
    assert model.info.channels == (2, 0) and model.info.source_channels is None
    with pytest.raises(ValueError, match="does not apply that selection by itself"):
        predict(image, model, device="cpu")
