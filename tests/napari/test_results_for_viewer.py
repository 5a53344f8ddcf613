"""Results made ready for the viewer in the worker: smallest label dtype, big planes as pyramids."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tiled_unet._napari._results import for_viewer, smallest_label_dtype
from napari_tiled_unet._napari.predict_widget import MODEL_FILE
from napari_tiled_unet.jobs import PredictResult


@pytest.mark.parametrize(
    ("high", "dtype"),
    [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65_535, np.uint16), (65_536, np.int32)],
)
def test_ids_come_in_the_smallest_dtype_that_holds_them(high, dtype):
    labels = np.zeros((5, 7), np.int32)
    labels[2, 3] = high
    small = smallest_label_dtype(labels)
    assert small.dtype == dtype
    np.testing.assert_array_equal(small, labels)


def test_negative_and_float_values_are_left_alone():
    negative = np.array([[-1, 2]], np.int32)
    assert smallest_label_dtype(negative).dtype == np.int32
    floats = np.array([[0.5, 2.0]], np.float32)
    assert smallest_label_dtype(floats) is floats


def test_a_big_plane_becomes_a_pyramid_of_contiguous_levels(monkeypatch):
    from napari_tiled_unet.io import pyramid

    monkeypatch.setattr(pyramid, "COARSEST_EDGE", 16)
    labels = np.arange(3 * 48 * 40, dtype=np.int64).reshape(3, 48, 40) % 300
    job = for_viewer(PredictResult("instances", labels, layout=None), multiscale_pixels=48 * 40)
    assert [level.shape for level in job.data] == [(3, 48, 40), (3, 24, 20), (3, 12, 10)]
    assert all(level.dtype == np.uint16 and level.flags.c_contiguous for level in job.data)
    np.testing.assert_array_equal(job.data[2], labels[:, ::4, ::4])
    small = for_viewer(PredictResult("instances", labels, layout=None), 48 * 40 + 1)
    assert isinstance(small.data, np.ndarray) and small.data.dtype == np.uint16


def test_probabilities_keep_their_values():
    probabilities = np.full((2, 8, 8), 0.5, np.float32)
    job = for_viewer(PredictResult("probabilities", probabilities, layout=None), 10**9)
    assert job.data is probabilities


def test_widget_hands_a_big_result_over_as_an_in_memory_pyramid(
    viewer, predict_widget, wait_done, image, model_file, monkeypatch
):
    from napari_tiled_unet import predict
    from napari_tiled_unet.io import pyramid

    monkeypatch.setattr(pyramid, "COARSEST_EDGE", 16)
    layer = viewer.add_image(image, name="cells")
    predict_widget.image.value = layer
    predict_widget.model_file.value = model_file
    predict_widget.model.value = MODEL_FILE
    predict_widget.device.value = "cpu"
    predict_widget.multiscale_result_pixels = image.size  # this image counts as large
    predict_widget.run()
    wait_done(predict_widget)
    result = viewer.layers["cells labels"]
    assert result.multiscale and [d.shape for d in result.data] == [(48, 40), (24, 20), (12, 10)]
    assert all(isinstance(level, np.ndarray) for level in result.data)  # in memory, not on disk
    np.testing.assert_array_equal(result.data[0], predict(image, model_file, device="cpu"))
    assert "multiscale;" in predict_widget.status.value  # not "on disk"
