"""The widgets on a laptop screen, and what they show before anything runs."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from qtpy.QtCore import QPoint

from napari_tiled_unet._napari._models import trained_models
from napari_tiled_unet._napari.predict_widget import TRAINED, PredictWidget
from napari_tiled_unet._napari.train_widget import TrainWidget

# A 1280x800 laptop: the two docks share about 720 px under the menu bar and dock titles.
DOCKS_MIN_HEIGHT = 600


def dock_both(make_napari_viewer, qtbot):
    """A shown viewer in a 1280x800 window with Predict and Train docked on the right."""
    viewer = make_napari_viewer(show=True)
    predict, train = PredictWidget(viewer), TrainWidget(viewer)
    docks = [
        viewer.window.add_dock_widget(predict, name="Predict"),
        viewer.window.add_dock_widget(train, name="Train"),
    ]
    viewer.window._qt_window.resize(1280, 800)
    qtbot.wait(50)
    qtbot.waitUntil(lambda: not predict.reading_model, timeout=30_000)
    return viewer.window._qt_window, predict, train, docks


def _shown_in(widget, window) -> bool:
    """Whether ``widget`` is drawn at least partly, inside the window's visible area."""
    top_left = widget.mapTo(window, QPoint(0, 0))
    return (
        widget.isVisible()
        and not widget.visibleRegion().isEmpty()
        and 0 <= top_left.y()
        and top_left.y() + widget.height() <= window.height()
    )


def test_both_widgets_fit_a_laptop_screen_with_their_actions_visible(make_napari_viewer, qtbot):
    window, predict, train, docks = dock_both(make_napari_viewer, qtbot)
    # The old layout asked for 430 + 866 px; the window grew past the screen.
    assert sum(dock.minimumSizeHint().height() for dock in docks) <= DOCKS_MIN_HEIGHT
    assert window.minimumSizeHint().height() <= 800
    assert window.height() <= 800
    for button in (predict.run_button, predict.cancel_button):
        assert _shown_in(button.native, window), button.name
    for button in (train.train_button, train.stop_button, train.save_button):
        assert _shown_in(button.native, window), button.name
    assert _shown_in(train.plot.canvas, window)


def test_advanced_training_settings_are_folded_away(make_napari_viewer, qtbot):
    _window, _predict, train, _docks = dock_both(make_napari_viewer, qtbot)
    assert train.label_mode.visible and train.iterations.visible
    assert not train.depth.visible and not train.learning_rate.visible
    train.show_advanced.value = True
    qtbot.wait(10)
    assert train.depth.visible and train.learning_rate.visible and train.axes.visible
    train.depth.value = 3  # the fields are the widget's, wherever they are shown
    train.label_mode.value = "instance"  # "auto" would need labels layers to read
    assert train.request().config.network.depth == 3


def test_predict_reads_the_layer_it_opens_on(viewer, qtbot, image):
    viewer.add_image(image, name="cells")
    widget = PredictWidget(viewer)
    try:
        qtbot.waitUntil(lambda: "Reading" not in widget.reading.value, timeout=30_000)
        assert widget.image.value is viewer.layers["cells"]
        assert "Y" in widget.reading.value and "X" in widget.reading.value, widget.reading.value
    finally:
        qtbot.waitUntil(lambda: not widget.reading_model, timeout=30_000)


def test_plot_steps_are_whole_numbers(viewer):
    from napari_tiled_unet.events import Progress

    widget = TrainWidget(viewer)
    for step in (1, 2, 3):
        widget.plot.add(Progress("train", step, 3, "", {"loss": 1.0 / step, "val_iou": 0.1}))
    widget.plot.redraw()
    widget.plot.figure.canvas.draw()
    ticks = widget.plot.loss_axes.get_xticks()
    assert len(ticks) >= 2
    np.testing.assert_array_equal(ticks, np.round(ticks))


def test_save_starts_beside_the_training_image(viewer, tmp_path, nuclei_pair):
    import tifffile

    image, labels = nuclei_pair
    folder = tmp_path / "experiment"
    folder.mkdir()
    tifffile.imwrite(folder / "cells.tif", image)
    opened = viewer.open(folder / "cells.tif", plugin="napari-tiled-unet")[0]
    viewer.add_labels(labels, name="cells masks")
    widget = TrainWidget(viewer)
    widget.pairs[0].image_layer.value = opened
    assert widget.save_start_path() == folder / "cells.pt"
    widget.model_name.value = "nuclei"
    assert widget.save_start_path() == folder / "nuclei.pt"

    widget.pairs[0].image_layer.value = viewer.add_image(image, name="pasted")
    assert widget.save_start_path() == Path("nuclei.pt")  # no file: the working folder


def test_stop_before_the_first_step_offers_no_model(
    viewer, qtbot, wait_done, nuclei_pair, monkeypatch
):
    from napari_tiled_unet.training import Trainer

    # The engine reads the data and yields step 0; it then waits until Stop was clicked, so
    # that the Stop lands exactly between reading the data and the first step.
    ready, clicked = threading.Event(), threading.Event()
    original = Trainer.iter_run

    def gated(self):
        run = original(self)
        try:
            first = next(run)
            ready.set()
            clicked.wait(30)
            yield first
            return (yield from run)
        finally:
            run.close()

    monkeypatch.setattr(Trainer, "iter_run", gated)
    image, labels = nuclei_pair
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells masks")
    predict = PredictWidget(viewer)
    widget = TrainWidget(viewer)
    widget.label_mode.value = "instance"
    widget.base_channels.value, widget.depth.value, widget.tile_size.value = 4, 2, 32
    widget.device.value = "cpu"

    assert widget.train() is not None
    qtbot.waitUntil(ready.is_set, timeout=60_000)
    widget.stop_button.native.click()
    clicked.set()
    wait_done(widget)

    assert widget.trainer.status == "stopped"
    assert widget.trainer.step == 0
    assert widget.model is None
    assert trained_models(viewer).names() == []
    assert not any(choice.startswith(TRAINED) for choice in predict.model.choices)
    assert "no model" in widget.status.value and "trained:" not in widget.status.value
    assert not widget.save_button.enabled and widget.train_button.enabled
    qtbot.waitUntil(lambda: not predict.reading_model, timeout=30_000)
