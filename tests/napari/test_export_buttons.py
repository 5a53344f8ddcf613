"""*Export to bioimage.io…* from the Train and Predict widgets, in a real viewer. Needs the
``bioimageio`` extra (skipped without it)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("bioimageio.spec")

from napari_tiled_unet._napari.bioimageio_export import export_arguments
from napari_tiled_unet._napari.train_widget import TrainWidget
from napari_tiled_unet.bioimageio import load_package

VALUES = {
    "name": "cells model",
    "description": "Nuclei, trained in a test.",
    "authors": "Ada Lovelace, Alan Turing",
    "license": "MIT",
    "citation": "A lab note|https://example.org/note",
}


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def wait_worker(qtbot, worker) -> None:
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass


def test_train_widget_exports_the_trained_model(viewer, qtbot, wait_done, nuclei_pair, tmp_path):
    image, labels = nuclei_pair
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells masks")
    widget = TrainWidget(viewer)
    assert not widget.export_button.enabled  # nothing trained yet
    widget.label_mode.value = "instance"
    widget.base_channels.value, widget.depth.value, widget.tile_size.value = 4, 2, 32
    widget.iterations.value, widget.batch_size.value, widget.device.value = 2, 2, "cpu"
    widget.train()
    wait_done(widget, timeout=120_000)
    assert widget.export_button.enabled, widget.status.value

    worker = widget.export_model(tmp_path / "cells", values=VALUES)  # ".zip" is added
    wait_worker(qtbot, worker)
    package = tmp_path / "cells.zip"
    assert package.is_file() and widget.status.value == f"Exported {package}."
    loaded = load_package(package)
    assert same_weights(loaded, widget.model)
    assert loaded.info.label_mode == "instance"


def test_predict_widget_exports_the_chosen_model_file(
    predict_widget, qtbot, model_file, image, tmp_path
):
    from napari_tiled_unet import load_model

    layer = predict_widget._viewer.add_image(image, name="cells")
    predict_widget.reset_choices()
    predict_widget.image.value = layer
    predict_widget.model_file.value = model_file
    worker = predict_widget.export_model(tmp_path / "tiny.zip", values=VALUES)
    wait_worker(qtbot, worker)
    assert same_weights(load_package(tmp_path / "tiny.zip"), load_model(model_file))


def test_bad_metadata_is_one_error_and_writes_nothing(predict_widget, errors, tmp_path):
    worker = predict_widget.export_model(tmp_path / "x.zip", values={**VALUES, "license": " "})
    assert worker is None and not (tmp_path / "x.zip").exists()
    assert errors == ["Export to bioimage.io: 'license' is empty; fill it in."]
    worker = predict_widget.export_model(tmp_path / "x.zip", values={**VALUES, "citation": "x"})
    assert worker is None and "TEXT|DOI_OR_URL" in errors[-1]


def test_the_dialog_values_become_the_package_metadata(tiny_unet):
    arguments = export_arguments(VALUES, tiny_unet())
    assert arguments["authors"] == ["Ada Lovelace", "Alan Turing"]
    assert arguments["license"] == "MIT"
    assert arguments["cite"][-1] == {"text": "A lab note", "url": "https://example.org/note"}
    assert any("U-Net" in c["text"] for c in arguments["cite"])  # the defaults stay


def test_an_export_never_replaces_the_package_it_is_made_from(
    predict_widget, errors, model_file, tmp_path
):
    from napari_tiled_unet.bioimageio import export_bioimageio

    package = export_bioimageio(model_file, tmp_path / "mine.zip")
    before = package.read_bytes()
    predict_widget.model_file.value = package
    assert predict_widget.export_model(package, values=VALUES) is None
    assert package.read_bytes() == before
    assert "model file" in errors[-1], errors


def test_train_widget_exports_while_training_runs(viewer, qtbot, nuclei_pair, tmp_path):
    image, labels = nuclei_pair
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells masks")
    widget = TrainWidget(viewer)
    widget.label_mode.value = "instance"
    widget.base_channels.value, widget.depth.value, widget.tile_size.value = 4, 2, 32
    widget.iterations.value, widget.device.value = 100_000, "cpu"
    widget.live_preview.value = False
    widget.train()
    qtbot.waitUntil(
        lambda: widget.trainer.step >= 2 and widget.export_button.enabled, timeout=60_000
    )
    # Before the first validation there is no kept best: the weights are copied between two
    # steps in a worker, then exported; training goes on.
    assert widget.export_model(tmp_path / "mid", values=VALUES) is None
    package = tmp_path / "mid.zip"
    qtbot.waitUntil(package.is_file, timeout=120_000)  # written atomically
    assert widget.running
    assert load_package(package).info.label_mode == "instance"
    widget.stop()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
