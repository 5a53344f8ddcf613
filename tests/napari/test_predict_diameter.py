"""The Predict widget's diameter field: rescaled prediction in a real viewer, bad values refused."""

from __future__ import annotations

import numpy as np


def test_diameter_field_rescales_and_keeps_the_layer_grid(
    viewer, predict_widget, wait_done, image, tiny_unet, tmp_path
):
    from napari_tiled_unet import predict, save_model

    path = save_model(
        tiny_unet(num_classes=3), tmp_path / "inst.pt", label_mode="instance", object_diameter=8.0
    )
    layer = viewer.add_image(image, name="cells", scale=(0.5, 2.0))
    predict_widget.reset_choices()
    predict_widget.image.value = layer
    predict_widget.model_file.value = path
    predict_widget.device.value = "cpu"
    predict_widget.diameter.value = " 16 "
    predict_widget.lazy_result_pixels = image.size  # would stream; a diameter keeps it in memory
    predict_widget.run()
    wait_done(predict_widget)
    result = viewer.layers["cells instances"]
    assert result.data.shape == image.shape
    np.testing.assert_array_equal(result.scale, layer.scale)
    expected = predict(image, path, output="instances", device="cpu", diameter=16)
    np.testing.assert_array_equal(np.asarray(result.data), expected)
    assert predict_widget.request(layer, path).diameter == 16.0
    for off in ("", "0"):
        predict_widget.diameter.value = off
        assert predict_widget.request(layer, path).diameter is None
    predict_widget.diameter.value = "Auto"
    assert predict_widget.request(layer, path).diameter == "auto"


def test_bad_diameter_is_refused_before_starting(viewer, predict_widget, errors, image):
    layer = viewer.add_image(image, name="cells")
    predict_widget.reset_choices()
    predict_widget.image.value = layer
    predict_widget.diameter.value = "big"
    n = len(viewer.layers)
    assert predict_widget.run() is None
    assert len(viewer.layers) == n
    assert errors and "diameter" in errors[-1] and "auto" in errors[-1]
    assert predict_widget.run_button.enabled and not predict_widget.running
