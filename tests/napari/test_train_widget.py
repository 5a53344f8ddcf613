"""The Train widget in a real viewer: train, live plot, Stop, Save, and hand-over to Predict."""

from __future__ import annotations

import numpy as np
import pytest

from _helpers import tiny_train_settings
from napari_tiled_unet._napari._models import trained_models
from napari_tiled_unet._napari.predict_widget import TRAINED, PredictWidget


def predict_with_trained(predict_widget, wait_done, viewer, name: str, output: str):
    """Predict layer ``name`` with the model trained on it in this session; the result layer."""
    predict_widget.reset_choices()
    predict_widget.image.value = viewer.layers[name]
    predict_widget.model.value = TRAINED + name
    predict_widget.output.value = output
    predict_widget.run()
    wait_done(predict_widget)
    return viewer.layers[f"{name} {output}"]


def test_training_offers_the_model_to_predict_and_saves_it(
    viewer, train_widget, wait_done, nuclei_pair, tmp_path, monkeypatch
):
    from napari_tiled_unet import load_model

    image, labels = nuclei_pair
    viewer.add_image(image, name="cells", scale=(0.5, 0.5))
    viewer.add_labels(labels, name="cells masks")
    predict_widget = PredictWidget(viewer)  # opened before training: must see the model anyway
    tiny_train_settings(train_widget)
    train_widget.augmentation.value = True  # exercise the whole sampling path once

    assert train_widget.train() is not None
    assert train_widget.stop_button.enabled and not train_widget.train_button.enabled
    wait_done(train_widget, timeout=120_000)

    trainer = train_widget.trainer
    assert trainer.status == "finished", train_widget.status.value
    assert train_widget.model is not None
    assert train_widget.model.config.num_classes == 3  # background / interior / boundary
    assert train_widget.plot.steps == list(range(1, 11))
    assert len(train_widget.plot.losses) == 10
    assert train_widget.plot.val_steps == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # every step for 10
    assert all(0 <= s <= 1 for s in train_widget.plot.val_scores)
    assert "trained: cells" in train_widget.status.value
    assert train_widget.save_button.enabled and train_widget.train_button.enabled

    assert TRAINED + "cells" in predict_widget.model.choices
    assert trained_models(viewer).get("cells") is train_widget.model

    # "Save model…" asks for a file name, then writes the model there.
    from qtpy.QtWidgets import QFileDialog

    asked = []

    def fake_dialog(parent, caption, directory, filter):
        asked.append(directory)
        return str(tmp_path / "nuclei"), filter

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(fake_dialog))
    train_widget.save_button.native.click()
    assert asked == ["cells.pt"]
    saved = tmp_path / "nuclei.pt"
    assert str(saved) in train_widget.status.value
    loaded = load_model(saved)
    assert loaded.config == train_widget.model.config
    assert loaded.metadata["label_mode"] == "instance"
    for key, value in train_widget.model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key].numpy(), value.numpy())

    result = predict_with_trained(predict_widget, wait_done, viewer, "cells", "instances")
    assert result.data.shape == image.shape
    np.testing.assert_array_equal(result.scale, (0.5, 0.5))


def test_stop_keeps_the_best_model_so_far(viewer, train_widget, wait_done, qtbot, nuclei_pair):
    image, labels = nuclei_pair
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells masks")
    tiny_train_settings(train_widget, iterations=100_000, label_mode="semantic")
    train_widget.model_name.value = "quick"

    train_widget.train()
    qtbot.waitUntil(lambda: len(train_widget.plot.losses) >= 3, timeout=60_000)
    train_widget.stop_button.native.click()
    wait_done(train_widget)

    trainer = train_widget.trainer
    assert trainer.status == "stopped"
    assert 3 <= trainer.step < 100_000
    assert train_widget.model is not None
    assert trained_models(viewer).names() == ["quick"]
    assert "Stopped at step" in train_widget.status.value
    assert train_widget.train_button.enabled and not train_widget.stop_button.enabled
    assert train_widget.save_button.enabled


def test_pairs_follow_the_layers(viewer, train_widget, nuclei_pair):
    image, labels = nuclei_pair
    a = viewer.add_image(image, name="a")
    b = viewer.add_image(image, name="b")
    la = viewer.add_labels(labels, name="a masks")
    lb = viewer.add_labels(labels, name="b masks")
    train_widget.reset_choices()
    train_widget.add_pair()  # the second row offers the second layers
    assert train_widget.layer_pairs() == [(a, la), (b, lb)]
    train_widget.remove_pair()
    train_widget.remove_pair()  # one row always stays
    assert train_widget.layer_pairs() == [(a, la)]


def assert_refused(widget, viewer, errors, n_layers, *fragments):
    assert len(viewer.layers) == n_layers
    assert errors, "the error must be shown as a napari notification"
    for fragment in fragments:
        assert fragment in errors[-1], f"{fragment!r} not in {errors[-1]!r}"
    assert not widget.running and widget.train_button.enabled


def test_labels_of_another_shape_are_refused(viewer, train_widget, errors, nuclei_pair):
    image, labels = nuclei_pair
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels[:50], name="half masks")
    tiny_train_settings(train_widget)
    train_widget.reset_choices()
    assert train_widget.train() is None
    assert_refused(train_widget, viewer, errors, 2, "'cells'", "'half masks'", "shape")


def test_missing_labels_layer_is_refused(viewer, train_widget, errors, nuclei_pair):
    viewer.add_image(nuclei_pair[0], name="cells")
    train_widget.reset_choices()
    assert train_widget.train() is None
    assert_refused(train_widget, viewer, errors, 1, "labels layer", "paint")


@pytest.fixture
def blobs_3d():
    """A 24x48x48 volume with three bright blobs, and their instance labels."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:24, :48, :48]
    labels = np.zeros((24, 48, 48), np.uint16)
    for k, (cz, cy, cx) in enumerate(((6, 12, 12), (12, 30, 34), (18, 14, 36)), start=1):
        labels[((zz - cz) / 4) ** 2 + ((yy - cy) / 7) ** 2 + ((xx - cx) / 7) ** 2 <= 1] = k
    volume = rng.normal(0.2, 0.1, labels.shape).astype(np.float32) + 0.8 * (labels > 0)
    return volume, labels


def test_3d_layers_train_a_3d_model_that_predict_offers(
    viewer, train_widget, predict_widget, wait_done, blobs_3d
):
    volume, labels = blobs_3d
    viewer.add_image(volume, name="stack", scale=(2.0, 0.5, 0.5))
    viewer.add_labels(labels, name="stack masks", scale=(2.0, 0.5, 0.5))
    tiny_train_settings(train_widget, iterations=2, label_mode="semantic")
    train_widget.dimensions.value = "3D"
    assert train_widget.anisotropic_levels.enabled
    train_widget.anisotropic_levels.value = 1
    train_widget.reset_choices()
    assert train_widget.train() is not None, train_widget.status.value
    assert train_widget.trainer.config.tile_shape == (24, 32, 32)  # as deep as the stack
    wait_done(train_widget, timeout=120_000)
    model = train_widget.model
    assert model is not None, train_widget.status.value
    assert model.config.ndim == 3 and model.config.anisotropic_levels == 1
    assert model.metadata["axes"] == "ZYX"

    result = predict_with_trained(predict_widget, wait_done, viewer, "stack", "labels")
    assert result.data.shape == volume.shape
    np.testing.assert_array_equal(result.scale, (2.0, 0.5, 0.5))


def test_3d_layers_train_plane_by_plane_by_default(viewer, train_widget, wait_done, blobs_3d):
    volume, labels = blobs_3d
    viewer.add_image(volume, name="stack")
    viewer.add_labels(labels, name="stack masks")
    tiny_train_settings(train_widget, iterations=1, label_mode="semantic")
    assert train_widget.dimensions.value == "2D"
    train_widget.reset_choices()
    assert train_widget.train() is not None, train_widget.status.value
    assert len(train_widget.trainer.pairs) == 24  # one pair per plane
    wait_done(train_widget, timeout=120_000)
    assert train_widget.model.config.ndim == 2


def test_a_3d_tile_that_cannot_fit_is_explained(viewer, train_widget, errors, blobs_3d):
    volume, labels = blobs_3d
    viewer.add_image(volume[:6], name="thin")
    viewer.add_labels(labels[:6], name="thin masks")
    tiny_train_settings(train_widget)
    train_widget.dimensions.value = "3D"
    train_widget.depth.value = 4  # Z steps of 16 planes
    train_widget.reset_choices()
    assert train_widget.train() is None
    assert_refused(train_widget, viewer, errors, 2, "16-plane", "6 planes", "2D model")


def test_switching_to_3d_offers_a_smaller_tile(train_widget):
    assert train_widget.tile_size.value == 256
    train_widget.dimensions.value = "3D"
    assert train_widget.tile_size.value == 64
    train_widget.dimensions.value = "2D"
    assert train_widget.tile_size.value == 256 and not train_widget.anisotropic_levels.enabled


def test_rgb_image_trains_a_three_channel_model(viewer, train_widget, wait_done, nuclei_pair):
    image, labels = nuclei_pair
    rgb = np.stack([image, image // 2, np.zeros_like(image)], axis=-1).astype(np.uint8)
    layer = viewer.add_image(rgb, name="photo")
    assert layer.rgb
    viewer.add_labels(labels, name="masks")
    tiny_train_settings(train_widget, iterations=1, label_mode="semantic")
    train_widget.reset_choices()
    assert train_widget.train() is not None, train_widget.status.value
    wait_done(train_widget, timeout=120_000)
    assert train_widget.model.config.in_channels == 3
    assert train_widget.model.metadata["axes"] == "CYX"

    train_widget.channels.value = "1"  # one channel of it: a single-channel model
    assert train_widget.train() is not None, train_widget.status.value
    wait_done(train_widget, timeout=120_000)
    assert train_widget.model.config.in_channels == 1


def test_a_layout_error_names_the_layer_and_axes(viewer, train_widget, errors, nuclei_pair):
    image, labels = nuclei_pair
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="masks")
    tiny_train_settings(train_widget)
    train_widget.axes.value = "ZYX"  # three letters for a 2-axis layer
    train_widget.reset_choices()
    assert train_widget.train() is None
    assert_refused(train_widget, viewer, errors, 2, "'cells'", "ZYX", "'masks'")
    errors.clear()
    train_widget.axes.value = ""
    train_widget.channels.value = "0,x"
    assert train_widget.train() is None
    assert_refused(train_widget, viewer, errors, 2, "channel numbers")


def test_learning_rate_must_be_a_number(viewer, train_widget, errors, nuclei_pair):
    viewer.add_image(nuclei_pair[0], name="cells")
    viewer.add_labels(nuclei_pair[1], name="masks")
    train_widget.reset_choices()
    train_widget.learning_rate.value = "fast"
    assert train_widget.train() is None
    assert_refused(train_widget, viewer, errors, 2, "'fast'", "3e-4")


def test_tile_larger_than_the_image_is_refused(viewer, train_widget, errors, nuclei_pair):
    viewer.add_image(nuclei_pair[0][:40, :40], name="small")
    viewer.add_labels(nuclei_pair[1][:40, :40], name="masks")
    tiny_train_settings(train_widget)
    train_widget.tile_size.value = 64
    train_widget.reset_choices()
    assert train_widget.train() is None
    assert_refused(train_widget, viewer, errors, 2, "'small'", "smaller")


def test_save_writes_where_asked(viewer, train_widget, tiny_unet, tmp_path):
    from napari_tiled_unet import load_model

    train_widget.model = tiny_unet()
    assert train_widget.save_model(tmp_path / "sub" / "m.pt") == tmp_path / "sub" / "m.pt"
    assert load_model(tmp_path / "sub" / "m.pt").config == train_widget.model.config


def test_save_without_a_model_says_so(train_widget, errors, tmp_path):
    assert train_widget.save_model(tmp_path / "m.pt") is None
    assert "no trained model" in errors[-1]
    assert not (tmp_path / "m.pt").exists()


def test_layout_is_shown_as_layers_and_settings_change(viewer, train_widget, nuclei_pair):
    image, labels = nuclei_pair
    viewer.add_image(np.stack([image] * 3), name="stack")
    viewer.add_labels(np.stack([labels] * 3), name="masks")
    train_widget.reset_choices()
    assert train_widget.reading.value.startswith("auto → instance ('masks': ")
    train_widget.label_mode.value = "instance"
    assert train_widget.reading.value == "'stack': ZYX: YX planes, one per Z (3)"
    train_widget.dimensions.value = "3D"
    assert train_widget.reading.value == "'stack': ZYX: ZYX volumes"
    train_widget.axes.value = "CYX"  # labels would need 2 axes
    assert "'stack'" in train_widget.reading.value and "'masks'" in train_widget.reading.value
    assert not train_widget.running
