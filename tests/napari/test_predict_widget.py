"""The Predict widget in a real viewer: results, cancel, and every kind of bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_tiled_unet._napari._models import trained_models
from napari_tiled_unet._napari.predict_widget import (
    DEFAULT_MODEL,
    MODEL_FILE,
    TRAINED,
    PredictWidget,
)


def choose(widget, layer, model_file=None):
    widget.reset_choices()
    widget.image.value = layer
    if model_file is not None:
        widget.model_file.value = model_file


def test_run_adds_labels_layer_on_top_of_the_image(
    viewer, predict_widget, wait_done, image, model_file
):
    from napari_tiled_unet import predict

    layer = viewer.add_image(
        image, name="cells", scale=(0.5, 2.0), translate=(10.0, -3.0), axis_labels=("y", "x")
    )
    choose(predict_widget, layer, model_file)
    assert predict_widget.model.value == MODEL_FILE  # picking a file selects it
    predict_widget.batch_size.value = 3
    predict_widget.device.value = "cpu"

    predict_widget.run_button.native.click()
    assert predict_widget.running
    assert predict_widget.cancel_button.enabled and not predict_widget.run_button.enabled
    wait_done(predict_widget)

    result = viewer.layers["cells labels"]
    assert result.__class__.__name__ == "Labels"
    assert result.data.shape == image.shape
    assert result.data.dtype == np.uint8
    np.testing.assert_array_equal(result.scale, layer.scale)
    np.testing.assert_array_equal(result.translate, layer.translate)
    assert tuple(result.axis_labels) == ("y", "x")
    np.testing.assert_array_equal(result.data, predict(image, model_file, device="cpu"))
    assert predict_widget.run_button.enabled and not predict_widget.cancel_button.enabled
    assert "cells labels" in predict_widget.status.value


def test_probabilities_become_an_image_with_a_class_axis(
    viewer, predict_widget, wait_done, image, model_file
):
    layer = viewer.add_image(image, name="cells", scale=(0.5, 2.0), translate=(10.0, -3.0))
    choose(predict_widget, layer, model_file)
    predict_widget.output.value = "probabilities"
    predict_widget.tile_size.value = 56
    predict_widget.run()
    wait_done(predict_widget)

    result = viewer.layers["cells probabilities"]
    assert result.__class__.__name__ == "Image"
    assert result.data.shape == (2, *image.shape)
    assert result.data.dtype == np.float32
    np.testing.assert_allclose(result.data.sum(axis=0), 1, rtol=1e-5)
    np.testing.assert_array_equal(result.scale, (1.0, 0.5, 2.0))
    np.testing.assert_array_equal(result.translate, (0.0, 10.0, -3.0))


def test_multiscale_layer_is_predicted_at_full_resolution(
    viewer, predict_widget, wait_done, image, model_file
):
    layer = viewer.add_image(
        [image, image[::2, ::2]], name="pyramid", multiscale=True, scale=(2, 2)
    )
    choose(predict_widget, layer, model_file)
    predict_widget.run()
    wait_done(predict_widget)
    result = viewer.layers["pyramid labels"]
    assert result.data.shape == image.shape
    np.testing.assert_array_equal(result.scale, (2, 2))


def test_cancel_stops_adds_nothing_and_restores_the_model(
    viewer, predict_widget, wait_done, qtbot, image, tiny_unet, monkeypatch
):
    """Cancel during a run: no layer, the engine's cleanup has run, the widget works again."""
    import napari_tiled_unet.inference as inference

    gate = threading.Event()
    real_iter_predict = inference.iter_predict

    def gated_iter_predict(*args, **kwargs):
        engine = real_iter_predict(*args, **kwargs)
        yield next(engine)  # the first event (done=0): the model is on its device in eval mode
        gate.wait(30)
        return (yield from engine)

    monkeypatch.setattr(inference, "iter_predict", gated_iter_predict)
    net = tiny_unet(train=True)
    name = trained_models(viewer).add("session model", net)
    layer = viewer.add_image(image, name="cells")
    choose(predict_widget, layer)
    predict_widget.model.value = TRAINED + name
    predict_widget.tile_size.value = 52  # the smallest tile: many tiles
    n_layers = len(viewer.layers)

    predict_widget.run()
    qtbot.waitUntil(lambda: " tiles of (52, 52)" in predict_widget.status.value, timeout=30_000)
    assert not net.training  # iter_predict put it in eval mode for the run
    predict_widget.cancel_button.native.click()
    gate.set()
    wait_done(predict_widget)

    assert len(viewer.layers) == n_layers
    assert net.training, "the engine's finally block should have restored train mode"
    assert "Cancelled" in predict_widget.status.value
    assert predict_widget.run_button.enabled and not predict_widget.cancel_button.enabled

    monkeypatch.setattr(inference, "iter_predict", real_iter_predict)
    predict_widget.run()
    wait_done(predict_widget)
    assert viewer.layers[-1].name == "cells labels"


def test_trained_models_are_offered_at_once(viewer, predict_widget, tiny_unet):
    registry = trained_models(viewer)
    assert predict_widget.model.choices == (DEFAULT_MODEL, MODEL_FILE)
    registry.add("nuclei", tiny_unet())
    registry.add("nuclei", tiny_unet())
    assert predict_widget.model.choices == (
        DEFAULT_MODEL,
        MODEL_FILE,
        "trained: nuclei",
        "trained: nuclei [1]",
    )
    # Another widget on the same viewer sees the same models; another viewer does not.
    assert TRAINED + "nuclei" in PredictWidget(viewer).model.choices


def test_registry_is_per_viewer(make_napari_viewer, tiny_unet):
    first, second = make_napari_viewer(), make_napari_viewer()
    trained_models(first).add("a", tiny_unet())
    assert trained_models(first).names() == ["a"]
    assert trained_models(second).names() == []


# -- bad inputs: each one is reported, adds nothing, and leaves the widget usable ---------------


def assert_refused(widget, viewer, errors, n_layers, *fragments):
    assert len(viewer.layers) == n_layers, "nothing may be added after an error"
    assert errors, "the error must be shown as a napari notification"
    for fragment in fragments:
        assert fragment in errors[-1], f"{fragment!r} not in {errors[-1]!r}"
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    assert not widget.running


def test_rgb_layer_needs_a_channel_for_a_one_channel_model(
    viewer, predict_widget, wait_done, errors, model_file
):
    from napari_tiled_unet import predict

    rgb = np.random.default_rng(0).integers(0, 255, (32, 40, 3), dtype=np.uint8)
    layer = viewer.add_image(rgb, name="photo", scale=(2.0, 3.0))
    assert layer.rgb
    choose(predict_widget, layer, model_file)
    predict_widget.device.value = "cpu"
    n = len(viewer.layers)
    predict_widget.run()
    wait_done(predict_widget)
    assert_refused(predict_widget, viewer, errors, n, "'photo'", "YXC", "channel")

    predict_widget.channels.value = "1"
    predict_widget.run()
    wait_done(predict_widget)
    result = viewer.layers["photo labels"]
    expected = predict(rgb[..., 1], model_file, device="cpu")
    np.testing.assert_array_equal(result.data, expected)
    np.testing.assert_allclose(result.scale, (2.0, 3.0))
    assert "YXC" in predict_widget.status.value


def test_bad_channel_list_is_refused_before_starting(viewer, predict_widget, errors, image):
    layer = viewer.add_image(image, name="cells")
    choose(predict_widget, layer)
    predict_widget.channels.value = "red"
    n = len(viewer.layers)
    assert predict_widget.run() is None
    assert_refused(predict_widget, viewer, errors, n, "channels", "2,0,1")


def test_stack_with_a_2d_model_is_predicted_plane_by_plane(
    viewer, predict_widget, wait_done, model_file
):
    from napari_tiled_unet import predict

    stack = np.random.default_rng(1).random((3, 32, 40), dtype=np.float32)
    layer = viewer.add_image(stack, name="stack", scale=(5.0, 0.5, 0.5))
    choose(predict_widget, layer, model_file)
    predict_widget.device.value = "cpu"
    predict_widget.run()
    wait_done(predict_widget)
    result = viewer.layers["stack labels"]
    for z in range(3):
        np.testing.assert_array_equal(result.data[z], predict(stack[z], model_file, device="cpu"))
    np.testing.assert_allclose(result.scale, (5.0, 0.5, 0.5))


def test_layer_axes_can_be_corrected(viewer, predict_widget, wait_done, errors, model_file):
    """A CYX layer is read as ZYX by default; the user says where the channel axis is."""
    stack = np.random.default_rng(2).random((2, 32, 40), dtype=np.float32)
    layer = viewer.add_image(stack, name="two", axis_labels=("c", "y", "x"))
    choose(predict_widget, layer, model_file)
    predict_widget.device.value = "cpu"
    predict_widget.axes.value = "CYX"
    predict_widget.channels.value = "1"
    predict_widget.run()
    wait_done(predict_widget)
    result = viewer.layers["two labels"]
    assert result.data.shape == (32, 40) and tuple(result.axis_labels) == ("y", "x")

    predict_widget.axes.value = "CZYX"  # 4 letters for 3 axes
    n = len(viewer.layers)
    predict_widget.run()
    wait_done(predict_widget)
    assert_refused(predict_widget, viewer, errors, n, "CZYX")


def test_nan_pixels_are_reported(viewer, predict_widget, wait_done, errors, image, model_file):
    image[5, 7] = np.nan
    layer = viewer.add_image(image, name="holey")
    choose(predict_widget, layer, model_file)
    n = len(viewer.layers)
    predict_widget.run()
    wait_done(predict_widget)
    assert_refused(predict_widget, viewer, errors, n, "'holey'", "NaN", "nan_to_num")


def test_a_file_that_is_not_a_model_is_reported(
    viewer, predict_widget, wait_done, errors, image, tmp_path
):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("this is not a model")
    layer = viewer.add_image(image, name="cells")
    choose(predict_widget, layer, bogus)
    n = len(viewer.layers)
    predict_widget.run()
    wait_done(predict_widget)
    assert_refused(
        predict_widget, viewer, errors, n, "notes.pt", "not a readable napari-tiled-unet model file"
    )


def test_missing_default_model_says_what_to_do(
    viewer, predict_widget, wait_done, errors, image, tmp_path, monkeypatch
):
    from napari_tiled_unet.model import modelfile

    monkeypatch.setattr(modelfile, "default_model_path", lambda: tmp_path / "default_model.pt")
    layer = viewer.add_image(image, name="cells")
    choose(predict_widget, layer)
    predict_widget.model.value = DEFAULT_MODEL
    n = len(viewer.layers)
    predict_widget.run()
    wait_done(predict_widget)
    assert_refused(
        predict_widget, viewer, errors, n, "default model is not installed", "model file", "Train"
    )


def test_no_model_file_chosen_is_refused(viewer, predict_widget, errors, image):
    layer = viewer.add_image(image, name="cells")
    choose(predict_widget, layer)
    predict_widget.model.value = MODEL_FILE
    n = len(viewer.layers)
    assert predict_widget.run() is None
    assert_refused(predict_widget, viewer, errors, n, "No model file chosen")


def test_no_image_layer_is_refused(viewer, predict_widget, errors):
    predict_widget.reset_choices()
    assert predict_widget.run() is None
    assert_refused(predict_widget, viewer, errors, 0, "no image layer")


def test_unusable_tile_size_names_sizes_that_work(
    viewer, predict_widget, wait_done, errors, image, model_file
):
    layer = viewer.add_image(image, name="cells")
    choose(predict_widget, layer, model_file)
    predict_widget.tile_size.value = 20
    n = len(viewer.layers)
    predict_widget.run()
    wait_done(predict_widget)
    assert_refused(predict_widget, viewer, errors, n, "tile size 20", "at least 52")


def test_halo_allows_tiles_smaller_than_the_receptive_field(
    viewer, predict_widget, wait_done, errors, tiny_unet, tmp_path
):
    """A depth-3 'same' network needs 56 px of context per side (its 51 px receptive field
    rounded up to the 8 px grid): 48 px tiles are refused with
    the exact halo (0) and work with halo 3, as ``predict(..., halo=3)`` does."""
    from napari_tiled_unet import predict, save_model

    path = save_model(tiny_unet(depth=3), tmp_path / "deep.pt")
    data = np.random.default_rng(3).random((96, 88)).astype(np.float32)
    layer = viewer.add_image(data, name="cells")
    choose(predict_widget, layer, path)
    assert predict_widget.halo.value == 0 and predict_widget.halo.label == "halo"
    names = [w.name for w in predict_widget]
    assert names.index("halo") == names.index("tile_size") + 1
    predict_widget.device.value = "cpu"
    predict_widget.tile_size.value = 48
    n = len(viewer.layers)
    predict_widget.run()
    wait_done(predict_widget)
    assert_refused(predict_widget, viewer, errors, n, "tile size 48", "56+56", "at least 120")
    assert "at least 120" in predict_widget.status.value

    predict_widget.halo.value = 3
    predict_widget.run()
    wait_done(predict_widget)
    result = viewer.layers["cells labels"]
    expected = predict(data, path, tile_shape=(48, 48), halo=3, device="cpu")
    np.testing.assert_array_equal(result.data, expected)
    assert "cells labels" in predict_widget.status.value


@pytest.mark.slow  # ~13 s: the whole prediction with 240³ tiles
def test_a_tile_over_the_memory_budget_is_announced_with_a_halo_that_fits(
    viewer, predict_widget, wait_done, warnings_shown, tmp_path
):
    """An exact depth-4 3D network needs 240³ tiles; the warning reaches the user."""
    from napari_tiled_unet import UNet, save_model

    path = save_model(UNet(base_channels=1, depth=4, ndim=3), tmp_path / "deep3d.pt")
    stack = np.random.default_rng(0).random((8, 24, 24)).astype(np.float32)
    layer = viewer.add_image(stack, name="stack")
    choose(predict_widget, layer, path)
    predict_widget.axes.value = "ZYX"
    predict_widget.device.value = "cpu"
    predict_widget.run()
    wait_done(predict_widget)
    assert viewer.layers[-1].name == "stack labels"
    assert any("(240, 240, 240)" in m and "halo=48" in m for m in warnings_shown), warnings_shown


def test_halo_is_refused_for_a_valid_network(
    viewer, predict_widget, wait_done, errors, image, tiny_unet, tmp_path
):
    from napari_tiled_unet import save_model

    path = save_model(tiny_unet(padding="valid"), tmp_path / "valid.pt")
    layer = viewer.add_image(image, name="cells")
    choose(predict_widget, layer, path)
    predict_widget.halo.value = 3
    n = len(viewer.layers)
    predict_widget.run()
    wait_done(predict_widget)
    assert_refused(predict_widget, viewer, errors, n, "'valid' network trims its own context")
    assert "'valid' network trims its own context" in predict_widget.status.value
    assert "halo cannot be cut to 3" in predict_widget.status.value


def test_auto_output_gives_objects_for_an_instance_model(
    viewer, predict_widget, wait_done, image, tiny_unet, tmp_path
):
    from napari_tiled_unet import predict, save_model

    path = save_model(tiny_unet(num_classes=3), tmp_path / "inst.pt", label_mode="instance")
    layer = viewer.add_image(image, name="cells")
    choose(predict_widget, layer, path)
    assert predict_widget.output.value == "auto"
    predict_widget.run_button.native.click()
    wait_done(predict_widget)
    result = viewer.layers["cells instances"]
    np.testing.assert_array_equal(result.data, predict(image, path, output="instances"))


def test_large_instance_results_are_labelled_block_by_block(
    viewer, predict_widget, wait_done, image, tiny_unet, tmp_path
):
    import os

    import zarr

    from napari_tiled_unet import predict, save_model

    path = save_model(tiny_unet(num_classes=3), tmp_path / "inst.pt", label_mode="instance")
    layer = viewer.add_image(image, name="cells")
    choose(predict_widget, layer, path)
    predict_widget.device.value = "cpu"
    predict_widget.lazy_result_pixels = image.size  # streamed: class map, then blockwise ids
    seen = []
    predict_widget._show_progress = lambda event: seen.append(event.stage)
    predict_widget.run()
    wait_done(predict_widget)
    result = viewer.layers["cells instances"]
    assert isinstance(result.data, zarr.Array)
    expected = predict(image, path, output="instances", device="cpu")
    np.testing.assert_array_equal(result.data[:], expected)
    assert "instances" in seen
    # The temporary class map beside the result is gone.
    assert os.listdir(predict_widget._store_dir.name) == ["result-1.zarr"]


def test_large_results_come_back_lazy_from_a_zarr_store(
    viewer, predict_widget, wait_done, image, model_file
):
    import zarr

    from napari_tiled_unet import predict

    layer = viewer.add_image(image, name="cells")
    choose(predict_widget, layer, model_file)
    predict_widget.device.value = "cpu"
    predict_widget.lazy_result_pixels = image.size  # this image counts as large
    predict_widget.run()
    wait_done(predict_widget)
    result = viewer.layers["cells labels"]
    assert isinstance(result.data, zarr.Array)
    np.testing.assert_array_equal(result.data[:], predict(image, model_file, device="cpu"))
    result.data[0, 0] = 7  # paintable: the store is writable
    assert result.data[0, 0] == 7

    predict_widget.lazy_result_pixels = image.size + 1  # small again: numpy
    predict_widget.run()
    wait_done(predict_widget)
    assert isinstance(viewer.layers["cells labels [1]"].data, np.ndarray)


def test_results_larger_than_the_screen_come_back_as_a_pyramid(
    viewer, predict_widget, wait_done, image, model_file, monkeypatch
):
    from napari_tiled_unet import predict
    from napari_tiled_unet.io import pyramid

    monkeypatch.setattr(pyramid, "COARSEST_EDGE", 16)
    layer = viewer.add_image(image, name="cells", scale=(0.5, 0.25))
    choose(predict_widget, layer, model_file)
    predict_widget.device.value = "cpu"
    predict_widget.lazy_result_pixels = image.size
    predict_widget.run()
    wait_done(predict_widget)
    result = viewer.layers["cells labels"]
    assert result.multiscale and [d.shape for d in result.data] == [(48, 40), (24, 20), (12, 10)]
    expected = predict(image, model_file, device="cpu")
    np.testing.assert_array_equal(result.data[0][:], expected)
    np.testing.assert_array_equal(result.data[2][:], expected[::4, ::4])
    np.testing.assert_allclose(result.scale, layer.scale)
    assert "multiscale" in predict_widget.status.value


def test_layout_is_shown_before_running_and_follows_corrections(
    viewer, predict_widget, qtbot, model_file
):
    """The model file is read off the GUI thread; then every edit of axes/channels shows how
    the model will read the layer, or why it cannot."""
    stack = np.zeros((3, 32, 40), np.float32)
    layer = viewer.add_image(stack, name="stack")
    choose(predict_widget, layer, model_file)
    qtbot.waitUntil(lambda: not predict_widget.reading_model, timeout=30_000)
    assert predict_widget.reading.value == "ZYX: YX planes, one per Z (3)"

    predict_widget.axes.value = "CYX"  # 3 channels for a one-channel model
    assert "CYX" in predict_widget.reading.value and "channel" in predict_widget.reading.value
    predict_widget.channels.value = "2"
    assert predict_widget.reading.value == "CYX: 3 channel(s), YX planes, channels [2]"
    predict_widget.axes.value = "CZYX"  # 4 letters for 3 axes
    assert "CZYX" in predict_widget.reading.value
    assert not predict_widget.running  # nothing was started


def test_layout_of_the_default_model(viewer, predict_widget, qtbot):
    rgb = np.zeros((32, 40, 3), np.uint8)
    layer = viewer.add_image(rgb, name="photo")
    choose(predict_widget, layer)
    qtbot.waitUntil(lambda: not predict_widget.reading_model, timeout=30_000)
    assert "YXC" in predict_widget.reading.value  # one-channel model: pick a channel
    predict_widget.channels.value = "0"
    assert predict_widget.reading.value == "YXC: 3 channel(s), YX planes, channels [0]"


def test_layout_uses_the_models_stored_channel_selection(
    viewer, predict_widget, qtbot, wait_done, tiny_unet, tmp_path
):
    """A model trained on channels [2, 0] of 3-channel images reads a 3-channel layer so, in
    the "reads as" text and in the run, unless 'channels' says otherwise."""
    from napari_tiled_unet import Normalization, predict, save_model
    from napari_tiled_unet._napari.predict_widget import read_model_spec
    from napari_tiled_unet.axes import ModelSpec

    net = tiny_unet(in_channels=2)
    path = save_model(
        net,
        tmp_path / "selected.pt",
        normalization=Normalization().to_dict(),
        channels=[2, 0],
        source_channels=3,
    )
    assert read_model_spec(path) == ModelSpec(2, 2, channels=[2, 0], source_channels=3)
    data = np.random.default_rng(0).random((3, 32, 40)).astype(np.float32)
    layer = viewer.add_image(data, name="three")
    choose(predict_widget, layer, path)
    qtbot.waitUntil(lambda: not predict_widget.reading_model, timeout=30_000)
    assert (
        predict_widget.reading.value
        == "CYX: 3 channel(s), YX planes, channels [2, 0] (from the model)"
    )
    predict_widget.device.value = "cpu"
    predict_widget.run()
    wait_done(predict_widget)
    np.testing.assert_array_equal(
        viewer.layers["three labels"].data, predict(data, path, channels=[2, 0], device="cpu")
    )
    assert "channels [2, 0] (from the model)" in predict_widget.status.value

    predict_widget.channels.value = "1,0"  # an explicit selection wins
    assert predict_widget.reading.value == "CYX: 3 channel(s), YX planes, channels [1, 0]"
    predict_widget.channels.value = ""
    four = viewer.add_image(np.concatenate([data, data[:1]]), name="four")
    predict_widget.reset_choices()
    predict_widget.image.value = four
    assert "trained on channels [2, 0] of 3-channel images" in predict_widget.reading.value
    assert "channels field of the Predict widget" in predict_widget.reading.value
