"""The Train widget's "auto" label mode, on the core's reading of the labels layers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tiled_unet._napari import _label_reading
from napari_tiled_unet._napari._label_reading import read_label_mode
from napari_tiled_unet._napari.train_widget import TrainWidget
from napari_tiled_unet.errors import UserInputError


def blobs(n: int) -> np.ndarray:
    labels = np.zeros((32, 32), np.uint16)
    for i in range(n):
        labels[(i // 4) * 8 : (i // 4) * 8 + 4, (i % 4) * 8 : (i % 4) * 8 + 4] = i + 1
    return labels


def test_auto_takes_the_reading_and_says_why():
    reading = read_label_mode("auto", [("masks", blobs(9))])
    assert reading.mode == "instance"
    assert "auto → instance" in reading.text and "9 ids" in reading.text
    assert read_label_mode("auto", [("classes", blobs(9) % 3)]).mode == "semantic"


def test_semantic_choice_warns_about_many_classes():
    assert "10-class" in read_label_mode("semantic", [("masks", blobs(9))]).text
    assert read_label_mode("semantic", [("masks", blobs(2))]).text == ""
    assert read_label_mode("instance", [("masks", blobs(2))]) == _label_reading.LabelReading(
        "instance", ""
    )


def test_pairs_that_disagree_ask_for_a_choice():
    with pytest.raises(UserInputError, match="'a': instance, 'b': semantic"):
        read_label_mode("auto", [("a", blobs(9)), ("b", blobs(9) % 3)])


def test_labels_too_large_to_read_on_every_edit_ask_for_a_choice():
    with pytest.raises(UserInputError, match="too large"):
        read_label_mode("auto", [("big", blobs(9))], size_limit=100)


def test_train_widget_defaults_to_auto_and_shows_the_reason(viewer, nuclei_pair):
    image, labels = nuclei_pair
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells masks")
    widget = TrainWidget(viewer)
    assert widget.label_mode.value == "auto"
    assert "auto → instance" in widget.reading.value
    assert widget.request().config.label_mode == "instance"
    widget.label_mode.value = "semantic"
    assert "instance mode" in widget.reading.value  # many ids read as classes: a warning


def test_auto_refuses_many_classes_as_the_command_line_does():
    labels = np.zeros((64, 32), np.uint16)
    labels[:32] = labels[32:] = blobs(12)  # every value in two separate places: not object ids
    with pytest.raises(UserInputError, match="Say which mode the labels are in"):
        read_label_mode("auto", [("map", labels)])


def test_a_blank_layer_beside_a_painted_one_does_not_block_auto():
    reading = read_label_mode(
        "auto", [("painted", blobs(9)), ("blank", np.zeros((32, 32), np.uint16))]
    )
    assert reading.mode == "instance"
