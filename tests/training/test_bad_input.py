"""Bad training input gives a ValueError that names the pair (or layer) at fault."""

import json

import numpy as np
import pytest
from _train_problems import disc_image, tiny_config

from napari_tiled_unet.training import TrainConfig, Trainer, iter_train, train


def good_pair():
    image, instances = disc_image(size=64, count=4, seed=1)
    return image, (instances > 0).astype(np.uint8)


def bad_pairs():
    image, labels = good_pair()
    nan_image = image.copy()
    nan_image[10, 20] = np.nan
    return {
        "shape mismatch": (image, labels[:, :60], "differ in shape"),
        "empty labels": (image, np.zeros_like(labels), "empty"),
        "single class": (image, np.ones_like(labels), "only class 1"),
        "float labels": (image, labels.astype(np.float32), "floating-point"),
        "smaller than a tile": (image[:20, :20], labels[:20, :20], "smaller than a training tile"),
        "NaN": (nan_image, labels, r"NaN.*\(10, 20\)"),
        "negative labels": (image, labels.astype(np.int8) - 1, "negative"),
        "instance ids in semantic mode": (
            image,
            labels.astype(np.uint16) * 1000,
            "label_mode='instance'",
        ),
    }


@pytest.mark.parametrize("case", list(bad_pairs()))
def test_bad_pair_names_the_pair(case):
    image, labels, message = bad_pairs()[case]
    good_image, good_labels = good_pair()
    config = tiny_config(iterations=1)
    with pytest.raises(ValueError, match=message) as error:
        # The single-class check pools all pairs, so that case runs alone.
        if case == "single class":
            train([image], [labels], config, names=["nuclei"])
        else:
            train([good_image, image], [good_labels, labels], config, names=["cells", "nuclei"])
    assert "nuclei" in str(error.value)
    assert "cells" not in str(error.value)


def test_layer_names_and_validation_pairs_are_named():
    image, labels = good_pair()
    with pytest.raises(ValueError, match="labels layer 'my labels'"):
        train(image, labels.astype(float), tiny_config(), names=[("raw", "my labels")])
    with pytest.raises(ValueError, match="validation labels of 'check'"):
        train(image, labels, tiny_config(), validation=[(image, np.zeros_like(labels), "check")])
    with pytest.raises(ValueError, match="validation pair 0"):
        train(image, labels, tiny_config(), validation=[(image, labels[:5])])


def test_sparse_needs_two_painted_labels():
    image, labels = good_pair()
    with pytest.raises(ValueError, match="only label 2 is painted"):
        train(image, labels * 2, tiny_config(label_mode="sparse"), names=["strokes"])


def test_cheap_problems_raise_before_any_pixel_is_read():
    image, labels = good_pair()
    with pytest.raises(ValueError, match="2 label arrays"):
        Trainer([image], [labels, labels])
    with pytest.raises(ValueError, match=r"tile_shape \(30, 30\)"):
        Trainer(image, labels, tiny_config(tile_shape=(30, 30)))
    with pytest.raises(ValueError, match="channel"):
        Trainer([image, np.stack([image, image])], [labels, labels], tiny_config())
    with pytest.raises(ValueError, match="one entry per pair"):
        Trainer(image, labels, tiny_config(), names=["a", "b"])
    # Errors in pixel values surface at the first next() of the generator.
    run = iter_train(image, np.zeros_like(labels), tiny_config(), names=["empty one"])
    with pytest.raises(ValueError, match="'empty one' are empty"):
        next(run)


def test_a_trainer_runs_once():
    image, labels = good_pair()
    trainer = Trainer(image, labels, tiny_config(iterations=1))
    trainer.run()
    with pytest.raises(RuntimeError, match="already run"):
        trainer.run()


def test_config_round_trip_and_validation():
    config = TrainConfig(label_mode="instance", tile_shape=[64, 64], class_names=["a", "b", "c"])
    data = config.to_dict()
    json.dumps(data)
    assert TrainConfig.from_dict(json.loads(json.dumps(data))) == config
    assert config.tile_shape == (64, 64) and config.effective_foreground_fraction == 0.5
    assert TrainConfig(label_mode="sparse").effective_foreground_fraction == 1.0
    for bad in (
        {"label_mode": "panoptic"},
        {"tile_shape": (0, 32)},
        {"tile_shape": 64},
        {"optimizer": "rmsprop"},
        {"loss": "focal"},
        {"sigma": 0},
        {"validation_fraction": 1.0},
        {"momentum": 1.0},
        {"best_metric": "val_object_f1"},
        {"device": "tpu"},
    ):
        with pytest.raises(ValueError, match="TrainConfig"):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"iterations": 5, "epochs": 3})
