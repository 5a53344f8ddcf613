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


def test_a_layer_painted_in_the_viewer_reads_as_sparse(viewer, nuclei_pair):
    """The train-while-you-paint loop: a Labels layer that started blank holds strokes, where
    0 is "not painted yet"; fine-tuning the (instance) bundled model reads it as
    sparse-instance. Masks opened as they are still read from their values."""
    from napari_tiled_unet._napari._start_from import BUNDLED_MODEL, NEW_NETWORK

    image, masks = nuclei_pair
    viewer.add_image(image, name="cells")
    painted = viewer.add_labels(np.zeros(image.shape, np.uint8), name="strokes")
    widget = TrainWidget(viewer)
    late = viewer.add_labels(np.zeros(image.shape, np.uint8), name="later strokes")
    opened = viewer.add_labels(masks, name="masks")
    for layer in (painted, late):
        layer.data[5:9, 5:40] = 1  # background strokes
        layer.data[40:50, 40:50] = 2  # one nucleus painted whole
        layer.data[60:70, 20:30] = 3
        widget.pairs[0].labels_layer.value = layer
        widget.start_from.value = NEW_NETWORK
        assert widget.label_reading().mode == "sparse"
        assert "painted in this viewer" in widget.reading.value
        widget.start_from.value = BUNDLED_MODEL
        assert widget.label_reading().mode == "sparse-instance"
        assert widget.request().config.label_mode == "sparse-instance"
    widget.pairs[0].labels_layer.value = opened
    assert widget.label_reading().mode == "instance"
