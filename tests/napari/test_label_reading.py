"""The Train widget's "auto" label mode, against the core's reading (a stand-in here)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_tiled_unet._napari import _label_reading
from napari_tiled_unet._napari._label_reading import read_label_mode
from napari_tiled_unet._napari.train_widget import TrainWidget
from napari_tiled_unet.errors import UserInputError


def fake_detect(labels):
    """Stands in for training.label_mode.detect_label_mode: > 4 ids read as instances."""
    n = len(np.unique(labels[labels > 0]))
    mode = "instance" if n > 4 else "semantic"
    warning = f"{n + 1} classes" if n > 4 else None
    return SimpleNamespace(
        mode=mode, n_values=n + 1, reason=f"{n} ids", semantic_classes_warning=warning
    )


@pytest.fixture
def detector(monkeypatch):
    monkeypatch.setattr(_label_reading, "detector", lambda: fake_detect)


def blobs(n: int) -> np.ndarray:
    labels = np.zeros((32, 32), np.uint16)
    for i in range(n):
        labels[(i // 4) * 8 : (i // 4) * 8 + 4, (i % 4) * 8 : (i % 4) * 8 + 4] = i + 1
    return labels


def test_auto_takes_the_reading_and_says_why(detector):
    reading = read_label_mode("auto", [("masks", blobs(9))])
    assert reading.mode == "instance"
    assert "auto → instance" in reading.text and "9 ids" in reading.text


def test_semantic_choice_warns_about_many_classes(detector):
    assert "10 classes" in read_label_mode("semantic", [("masks", blobs(9))]).text
    assert read_label_mode("semantic", [("masks", blobs(2))]).text == ""
    assert read_label_mode("instance", [("masks", blobs(2))]) == _label_reading.LabelReading(
        "instance", ""
    )


def test_pairs_that_disagree_ask_for_a_choice(detector):
    with pytest.raises(UserInputError, match="'a': instance, 'b': semantic"):
        read_label_mode("auto", [("a", blobs(9)), ("b", blobs(2))])


def test_labels_too_large_to_read_on_every_edit_ask_for_a_choice(detector):
    with pytest.raises(UserInputError, match="too large"):
        read_label_mode("auto", [("big", blobs(9))], size_limit=100)


def test_without_the_core_reading_only_explicit_modes_are_offered(monkeypatch):
    monkeypatch.setattr(_label_reading, "detector", lambda: None)
    assert _label_reading.label_mode_choices() == ("semantic", "instance", "sparse")
    assert _label_reading.default_label_mode("semantic") == "semantic"


def test_train_widget_defaults_to_auto_and_shows_the_reason(detector, viewer, nuclei_pair):
    image, labels = nuclei_pair
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells masks")
    widget = TrainWidget(viewer)
    assert widget.label_mode.value == "auto"
    assert "auto → instance" in widget.reading.value
    assert widget.request().config.label_mode == "instance"
    widget.label_mode.value = "semantic"
    assert "classes" in widget.reading.value  # the stand-in's warning
