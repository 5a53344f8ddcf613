"""Issue 17: a model trained at many object sizes (scale augmentation; it stores
``object_diameter_range``) measures each image's object size for its separation settings
instead of assuming its training median, identically in memory and streamed."""

import dataclasses
import math

import numpy as np
import pytest
import tifffile

from _nets import tiny_unet
from napari_tiled_unet import predict, save_model, separation
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.metrics import object_f1
from napari_tiled_unet.model.info import ModelInfo, ModelInfoError
from napari_tiled_unet.model.modelfile import default_model_path, load_model
from napari_tiled_unet.object_size import convexity, training_object_stats
from napari_tiled_unet.separation import InstanceOptions
from napari_tiled_unet.training.synthetic import synthetic_nuclei_set
from test_separation import discs, in_memory, merged_class_map

SAMPLE = default_model_path().parent


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


def test_convexity_is_lost_where_objects_join():
    apart = discs((80, 120), [(40, 30), (40, 90)], 20)
    joined = (discs((80, 120), [(40, 30), (40, 62)], 20) > 0).astype(np.int32)
    assert convexity(apart) > 0.95
    assert convexity(joined) < convexity(apart) - 0.05
    assert convexity(np.zeros((8, 8), np.int32)) is None


def cho_crop():
    """A class map of 3 CHO nuclei by a network that never saw CHO, its truth, and that
    network's separation settings (trained on nuclei of 18 px, scale-augmented to 62 px)."""
    classes = tifffile.imread(SAMPLE / "class_maps" / "cho_t04_crop.tif")
    truth = tifffile.imread(SAMPLE / "sources" / "cho" / "cho_t04_labels.tif")[192:384, :192]
    info = ModelInfo(
        axes="YX", object_diameter=18.33, object_diameter_range=(4.15, 62.41), min_object_size=40
    )
    return classes, truth, InstanceOptions.for_model(info)


def test_pieces_of_large_nuclei_are_joined_again():
    """The network draws CHO nuclei of ~70 px with an uneven interior. Labelled at 20-30 px
    they fall into pieces that measure about what they are labelled at, so the search
    settled there; labelled at 1.5x, the pieces join into convex nuclei."""
    classes, truth, options = cho_crop()
    assert options.for_image(classes).diameter > 45
    found = in_memory(classes, options)
    assert found.max() == 3 and object_f1(truth, found) == 1.0


def test_pieces_stay_apart_without_the_growth_check(monkeypatch):
    classes, truth, options = cho_crop()
    monkeypatch.setattr(separation, "MEASURE_GROWTH", math.inf)
    found = in_memory(classes, options)
    assert found.max() > 10 and object_f1(truth, found) < 0.2


@pytest.fixture(scope="module")
def crowded_class_maps():
    """The bundled model's class maps of the two most crowded generated images (seed 2),
    with their truth."""
    model = load_model(default_model_path())
    images = synthetic_nuclei_set(4, (256, 256), seed=2)
    maps = []
    for image, truth in (images[1], images[3]):
        probabilities = predict(image, model, output="probabilities", device="cpu")
        maps.append((probabilities.argmax(0).astype(np.uint8), truth))
    return InstanceOptions.for_model(model.info), maps


@pytest.mark.parametrize("check", ["convexity", "none"])
def test_crowded_nuclei_are_not_joined_where_they_lose_convexity(
    monkeypatch, crowded_class_maps, check
):
    """Objects labelled at 1.5x the settled size measure 1.5x larger because touching
    nuclei merge, with necks."""
    if check == "none":
        monkeypatch.setattr(separation, "MEASURE_CONVEXITY", math.inf)
    options, maps = crowded_class_maps
    for classes, truth in maps:
        found = in_memory(classes, options)
        if check == "convexity":
            assert object_f1(truth, found) > 0.6
        else:
            assert object_f1(truth, found) < 0.2
