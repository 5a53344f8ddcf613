"""Issue 17: a model trained at many object sizes (scale augmentation; it stores
``object_diameter_range``) measures each image's object size for its separation settings
instead of assuming its training median, identically in memory and streamed."""

import dataclasses

import numpy as np
import pytest

from _nets import tiny_unet
from napari_tiled_unet import save_model
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.metrics import object_f1
from napari_tiled_unet.model.info import ModelInfo, ModelInfoError
from napari_tiled_unet.model.modelfile import load_model
from napari_tiled_unet.object_size import training_object_stats
from napari_tiled_unet.separation import InstanceOptions
from test_separation import discs, in_memory, merged_class_map


def touching_pairs():
    """Pairs of touching discs of diameter 41 that the network drew as one blob each."""
    centres = []
    for y in (40, 120, 200):
        centres += [(y, 28), (y, 64), (y, 150), (y, 186)]
    labels = discs((240, 240), centres, 20)
    return labels, merged_class_map(labels)


@pytest.mark.parametrize("start", [8.0, 120.0])
def test_the_object_size_is_measured_on_the_image(start):
    truth, classes = touching_pairs()
    fixed = InstanceOptions.for_diameter(start, 2)
    options = InstanceOptions.for_model(
        ModelInfo(axes="YX", object_diameter=start, object_diameter_range=(5, 160))
    )
    fitted = options.for_image(classes)
    assert fitted.diameter_range is None
    assert fitted.diameter == pytest.approx(41, rel=0.1)
    cores = dataclasses.replace(fixed, peak_radius=0, seed_radius=0)
    assert in_memory(classes, cores).max() == 6  # cores at the training size merge every pair
    # width peaks split these round pairs at any smaller size; a larger one merges them
    assert in_memory(classes, fixed).max() == (12 if start < 41 else 6)
    found = in_memory(classes, options)
    assert found.max() == 12 and object_f1(truth, found) == 1.0
    np.testing.assert_array_equal(found, in_memory(classes, fitted))


def test_without_a_range_the_training_size_holds():
    _, classes = touching_pairs()
    options = InstanceOptions.for_model(ModelInfo(axes="YX", object_diameter=8.0))
    assert options.diameter_range is None and options.for_image(classes) is options
    blank = InstanceOptions.for_model(
        ModelInfo(axes="YX", object_diameter=8.0, object_diameter_range=(5, 160))
    )
    fitted = blank.for_image(np.zeros((64, 64), np.uint8))  # nothing to measure
    assert fitted.diameter == 8.0 and fitted.diameter_range is None


def test_the_range_is_stored_for_scale_augmented_training(tmp_path):
    labels = discs((60, 60), [(15, 15), (45, 45)], 8)
    stats = training_object_stats([labels], 2, scale=2.0)
    diameter = stats["object_diameter"]
    assert stats["object_diameter_range"] == [round(diameter / 2, 2), round(diameter * 2, 2)]
    assert "object_diameter_range" not in training_object_stats([labels], 2)
    path = save_model(
        tiny_unet(num_classes=3),
        tmp_path / "m.pt",
        label_mode="instance",
        object_diameter=diameter,
        object_diameter_range=stats["object_diameter_range"],
    )
    assert load_model(path).info.object_diameter_range == (diameter / 2, diameter * 2)
    for bad in ((3,), (0, 5), (9, 4), ("a", 4)):
        with pytest.raises(ModelInfoError, match="object_diameter_range"):
            ModelInfo(object_diameter_range=bad)
    with pytest.raises(UserInputError, match="diameter_range"):
        InstanceOptions(diameter_range=(9, 4))


def test_training_with_scale_augmentation_stores_the_range():
    from napari_tiled_unet.training import AugmentSpec, TrainConfig, train

    rng = np.random.default_rng(0)
    labels = discs((64, 64), [(16, 16), (16, 46), (46, 30)], 7)
    image = (labels > 0) + rng.normal(0, 0.1, labels.shape).astype(np.float32)
    config = TrainConfig(
        label_mode="instance",
        tile_shape=(32, 32),
        iterations=1,
        device="cpu",
        augment=AugmentSpec(scale=2.0),
    )
    info = train(image, labels, config).info
    low, high = info.object_diameter_range
    assert low == pytest.approx(info.object_diameter / 2, abs=0.02)
    assert high == pytest.approx(info.object_diameter * 2, abs=0.02)
    plain = train(image, labels, TrainConfig(**{**config.__dict__, "augment": AugmentSpec()}))
    assert plain.info.object_diameter_range is None
