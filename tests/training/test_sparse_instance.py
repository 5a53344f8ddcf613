"""Partial instance annotation ("sparse-instance"): 0 = not annotated, 1 = background, 2.. = objects."""

import numpy as np
import pytest
from _train_problems import disc_image, tiny_config
from test_sampling_loss import sampler_for

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.model.modelfile import load_model, save_model
from napari_tiled_unet.training import Trainer, train
from napari_tiled_unet.training.sampler import TileLayout
from napari_tiled_unet.training.targets import (
    BACKGROUND,
    BOUNDARY,
    INTERIOR,
    instance_targets,
    make_targets,
    sparse_instance_targets,
)


def partial_annotation(instances, objects, background_rows):
    """Objects ``objects`` painted whole (id + 1), background (1) on ``background_rows``."""
    labels = np.zeros(instances.shape, np.uint16)
    for k in objects:
        labels[instances == k] = k + 1
    for row in background_rows:
        labels[row][instances[row] == 0] = 1
    return labels


def test_boundary_only_where_both_sides_are_annotated():
    labels = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0],
            [0, 2, 2, 3, 3, 3, 0],
            [0, 2, 2, 3, 3, 3, 0],
            [0, 2, 2, 3, 3, 3, 0],
            [1, 1, 1, 1, 1, 0, 0],
        ]
    )
    targets, annotated = sparse_instance_targets(labels)
    # Objects 2 and 3 touch: both sides of their contact are boundary.
    assert targets[2, 2] == targets[2, 3] == BOUNDARY and annotated[2, 2] and annotated[2, 3]
    # An object over painted background: boundary, also where it meets unannotated pixels too.
    assert targets[3, 4] == targets[3, 1] == BOUNDARY and annotated[3, 4] and annotated[3, 1]
    assert targets[4, 0] == BACKGROUND and annotated[4, 0]
    assert targets[2, 4] == INTERIOR and annotated[2, 4]  # surrounded by its own object
    # Object pixels that meet only unannotated pixels (or their own): edge or inside cannot
    # be told, so they do not count.
    assert not annotated[1, 1] and not annotated[2, 1] and not annotated[3, 5]
    assert not annotated[2, 5] and not annotated[1, 4]
    # Unannotated pixels never count.
    assert not annotated[labels == 0].any()


def test_full_annotation_reads_as_instance_mode():
    _image, instances = disc_image(size=48, count=8)
    full = np.where(instances > 0, instances + 1, 1)  # background 1 everywhere
    targets, annotated = make_targets(full, "sparse-instance")
    assert annotated.all()
    np.testing.assert_array_equal(targets, instance_targets(instances))


def test_samples_weight_only_annotated_pixels_and_derived_boundaries():
    image, instances = disc_image(size=64, count=6, radius=7)
    labels = partial_annotation(instances, objects=(1, 2, 3), background_rows=range(0, 64, 3))
    layout = TileLayout((32, 32), (32, 32), 0, 1)  # one pixel of context, as for instances
    _pair, sampler = sampler_for(image, labels, "sparse-instance", layout, 1.0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        origin = sampler.sample_origin(rng)[1]
        window = tuple(slice(o, o + 32) for o in origin)
        # Targets of the whole image: boundaries at the window's edge see their neighbours.
        expected_targets, expected_annotated = sparse_instance_targets(labels)
        sampler.sample_origin = lambda _rng, o=origin: (0, o)
        _x, targets, weights = sampler.sample(rng)
        np.testing.assert_array_equal(weights > 0, expected_annotated[window])
        np.testing.assert_array_equal(targets[weights > 0], expected_targets[window][weights > 0])
        assert not (weights[labels[window] == 0] > 0).any()
        del sampler.sample_origin


def test_fine_tuning_an_instance_model_on_partial_instances(tmp_path):
    image, instances = disc_image(size=96, count=10)
    base = train(image, instances, tiny_config(iterations=2, label_mode="instance"))
    path = save_model(base, tmp_path / "base.pt")
    labels = partial_annotation(instances, objects=(1, 2, 3, 4), background_rows=range(0, 96, 4))
    config = tiny_config(iterations=4, validation_every=2, label_mode="sparse-instance")
    trainer = Trainer(image, labels, config, model=path)
    tuned = trainer.run()
    assert trainer.num_classes == 3 and trainer.class_names == list(base.info.class_names)
    # An instance model (predicts objects), trained on the partial convention.
    assert tuned.info.label_mode == "instance"
    assert tuned.info.training["config"]["label_mode"] == "sparse-instance"
    assert "val_iou" in trainer.best_scores and "val_object_f1" not in trainer.best_scores
    counts = tuned.info.training["class_pixel_counts"]
    _t, annotated = sparse_instance_targets(labels)
    assert sum(counts) == np.count_nonzero(annotated)  # class balance counts annotated pixels
    load_model(save_model(tuned, tmp_path / "tuned.pt"))


def test_a_semantic_model_cannot_fine_tune_on_partial_instances(tmp_path):
    image, instances = disc_image(size=96, count=10)
    semantic = train(image, (instances > 0).astype(np.uint8), tiny_config(iterations=1))
    labels = partial_annotation(instances, objects=(1, 2), background_rows=range(0, 96, 4))
    with pytest.raises(UserInputError, match="label_mode='semantic'"):
        Trainer(image, labels, tiny_config(label_mode="sparse-instance"), model=semantic)


def test_empty_partial_instances_say_what_to_paint():
    image, _ = disc_image(size=64)
    config = tiny_config(iterations=1, label_mode="sparse-instance")
    with pytest.raises(UserInputError, match=r"whole objects \(2, 3, \.\.\.\) and some background"):
        train(image, np.zeros(image.shape, np.uint8), config)
