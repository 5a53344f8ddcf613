"""Label mode "auto": instance ids and semantic classes told apart from the labels alone."""

import numpy as np
import pytest
import tifffile

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.jobs import TrainImage, TrainRequest, plan_training
from napari_tiled_unet.model.modelfile import default_model_path
from napari_tiled_unet.training import TrainConfig, Trainer
from napari_tiled_unet.training.label_mode import (
    DETECT_PIXELS,
    SEMANTIC_MAX_CLASSES,
    choose_label_mode,
    detect_label_mode,
)

SAMPLE = default_model_path().parent


def discs(size=96, count=8, radius=6, seed=0):
    """Non-overlapping discs, one id each (uint16), like the bundled instance masks."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.uint16)
    yy, xx = np.mgrid[:size, :size]
    placed = 0
    while placed < count:
        cy, cx = rng.integers(radius, size - radius, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        if not labels[disc].any():
            placed += 1
            labels[disc] = placed
    return labels


def stripes(size=96, classes=3, period=12):
    """A class map: each class a set of separate stripes (several regions per value)."""
    column = (np.arange(size) // period) % (classes + 1)
    return np.broadcast_to(column, (size, size)).astype(np.uint8).copy()


@pytest.mark.parametrize(
    "name",
    ["nuclei_labels.tif", "synthetic_nuclei_labels.tif", "train/img_00_labels.tif"],
)
def test_the_bundled_masks_read_as_instances(name):
    labels = tifffile.imread(SAMPLE / name)
    reading = detect_label_mode(labels)
    assert reading.mode == "instance"
    assert reading.n_values == len(np.unique(labels)) - 1 and not reading.sampled
    assert reading.reason.startswith(f"{reading.n_values} ids, each one connected blob")
    # As 100+ semantic classes they would train the useless model of issue 15.
    if reading.n_values > SEMANTIC_MAX_CLASSES:
        assert "instance mode" in reading.semantic_classes_warning


def test_a_mask_and_a_few_classes_read_as_semantic():
    labels = tifffile.imread(SAMPLE / "nuclei_labels.tif")
    mask = detect_label_mode(labels > 0)  # bool works too
    assert (mask.mode, mask.n_values, mask.semantic_classes_warning) == ("semantic", 1, None)
    assert "foreground mask" in mask.reason
    classes = detect_label_mode(stripes(classes=3))
    assert (classes.mode, classes.n_values) == ("semantic", 3)
    assert classes.reason.endswith("→ semantic (value = class)")


def test_a_few_ids_each_one_blob_read_as_instances():
    """napari's "new label" per painted object: 3 ids, 3 blobs."""
    reading = detect_label_mode(discs(count=3))
    assert reading.mode == "instance" and reading.single_share == 1.0
    assert "choose semantic" in reading.reason


def test_ids_of_3d_objects_count_one_blob_per_plane():
    volume = np.stack([discs(count=12, seed=1)] * 5)  # each id spans 5 planes
    assert detect_label_mode(volume).mode == "instance"


def test_many_classes_are_refused_in_auto_and_warned_about_in_semantic():
    many = stripes(size=200, classes=12, period=4)  # 12 values, each many stripes
    reading = detect_label_mode(many)
    assert reading.mode == "semantic" and reading.refused
    with pytest.raises(UserInputError, match=r"labels of 'map' hold 12 values.*13-class model"):
        choose_label_mode("auto", [("labels of 'map'", many)])
    semantic = choose_label_mode("semantic", [("labels of 'map'", many)])
    assert semantic.mode == "semantic" and "13-class model" in semantic.warning
    # An explicit instance or sparse mode reads nothing and says nothing.
    assert choose_label_mode("instance", [("x", many)]).warning == ""


def test_a_0_255_mask_is_refused_with_the_fix():
    mask = (discs() > 0).astype(np.uint8) * 255
    with pytest.raises(UserInputError, match=r"256-class model.*save it as 0/1"):
        choose_label_mode("auto", [("labels of 'mask'", mask)])


def test_pairs_must_agree_and_the_odd_one_is_named():
    pairs = [("labels of 'a'", discs(seed=1)), ("labels of 'b'", stripes())]
    with pytest.raises(UserInputError, match=r"labels of 'b' read as semantic.*'a' as instance"):
        choose_label_mode("auto", pairs)
    # Empty labels (an unpainted plane) do not take part.
    empty = ("labels of 'c'", np.zeros((64, 64), int))
    agreed = choose_label_mode("auto", [pairs[0], empty, ("labels of 'd'", discs(seed=2))])
    assert agreed.mode == "instance" and agreed.reason.endswith("and 1 more pair(s) alike)")


def test_a_fine_tuned_model_decides_auto():
    choice = choose_label_mode("auto", [("labels", stripes())], model_mode="instance")
    assert choice.mode == "instance" and "model to fine-tune" in choice.reason


class CountingLabels:
    """A lazy labels array of any size (squares with one id each) that counts pixels read."""

    def __init__(self, shape, side=40, gap=8, empty=False):
        self.shape, self.dtype, self.ndim = shape, np.dtype(np.int32), len(shape)
        self.side, self.gap, self.empty, self.read = side, gap, empty, 0

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        rows, cols = (np.arange(n)[k] for n, k in zip(self.shape[-2:], key[-2:], strict=True))
        self.read += rows.size * cols.size
        if self.empty:
            return np.zeros((rows.size, cols.size), self.dtype)
        step, per_row = self.side + self.gap, self.shape[-1] // (self.side + self.gap) + 1
        inside = ((rows[:, None] % step) < self.side) & ((cols[None, :] % step) < self.side)
        ids = (rows[:, None] // step) * per_row + cols[None, :] // step + 1
        return np.where(inside, ids, 0).astype(self.dtype)


def test_large_labels_are_sampled_not_read_whole():
    labels = CountingLabels((30_000, 30_000))  # 900 Mpx, 3.6 GB if read
    reading = detect_label_mode(labels)
    assert reading.mode == "instance" and reading.sampled
    assert "Mpx sample" in reading.reason
    assert labels.read <= DETECT_PIXELS
    assert detect_label_mode(labels).reason == reading.reason  # repeatable


def test_a_few_strokes_in_a_large_unpainted_layer_are_found():
    labels = np.zeros((8192, 8192), np.uint8)
    labels[7000:7040, 300:340] = 1
    labels[7100:7140, 300:340] = 1
    labels[7200:7240, 500:520] = 2
    labels[7300:7340, 500:520] = 2
    reading = detect_label_mode(labels)
    assert (reading.mode, reading.n_values, reading.sampled) == ("semantic", 2, True)
    assert detect_label_mode(np.zeros((8192, 8192), np.uint8)).empty


def test_float_labels_are_refused():
    with pytest.raises(UserInputError, match="integers"):
        detect_label_mode(np.zeros((8, 8), np.float32))


def test_trainer_and_plan_decide_auto(rng):
    labels = discs(size=64, count=6)
    image = (labels > 0).astype(np.float32) + rng.normal(0, 0.1, labels.shape).astype(np.float32)
    config = TrainConfig(iterations=1, tile_shape=(32, 32), device="cpu", prefetch=False)
    assert config.label_mode == "auto"
    trainer = Trainer(image, labels, config, names=["cells"])
    assert trainer.config.label_mode == "instance"
    assert trainer.label_mode.reason == "instance (auto: 6 ids, each one connected blob)"
    plan = plan_training(TrainRequest(config), [TrainImage(image, labels, "cells")])
    assert plan.config.label_mode == "instance" and plan.label_mode.warning == ""
    # An explicit semantic mode is kept, with a warning for many values.
    many = discs(size=64, count=12)
    semantic = TrainRequest(TrainConfig(label_mode="semantic", tile_shape=(32, 32)))
    plan = plan_training(semantic, [TrainImage(image, many, "cells")])
    assert plan.config.label_mode == "semantic" and "instance mode" in plan.label_mode.warning
    assert plan.label_mode.warning.startswith("labels of cells:")
