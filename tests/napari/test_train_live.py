"""Train while you paint, in a real viewer: live preview of the view, labels painted while
training reach the sampler, Continue, start from a model, save while training, and a viewer
closed while training or previewing leaves no thread running."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from qtpy.QtCore import QThreadPool

from _helpers import tiny_train_settings
from napari_tiled_unet._napari import _preview
from napari_tiled_unet._napari._models import trained_models
from napari_tiled_unet._napari._start_from import BUNDLED_MODEL, MODEL_FILE, NEW_NETWORK
from napari_tiled_unet._napari.train_widget import TrainWidget
from napari_tiled_unet.training.config import FINETUNE_LR


@pytest.fixture
def shown_viewer(make_napari_viewer):
    """A shown viewer: napari computes the visible box (corner_pixels) only when it draws."""
    return make_napari_viewer(show=True)


@pytest.fixture
def viewer(shown_viewer):
    """The viewer the shared ``train_widget`` fixture docks into: shown, as above."""
    return shown_viewer


@pytest.fixture
def widget(train_widget):
    return train_widget


@pytest.fixture
def scribbles(nuclei_pair):
    """The 96x96 sample crop tiled to 192x192, with sparse scribbles: 1 = background strokes,
    2 = two whole nuclei."""
    image, instances = (np.tile(a, (2, 2)) for a in nuclei_pair)
    labels = np.zeros(instances.shape, np.uint8)
    labels[1:3, :] = 1
    labels[:, 1:3] = 1
    ids = [i for i in np.unique(instances[:96, :96]) if i][:2]
    labels[np.isin(instances, ids) & (np.arange(192)[:, None] < 96)] = 2
    return image, labels, instances


def tiny(widget, iterations=100_000, preview_every=0.5):
    tiny_train_settings(widget, iterations, label_mode="sparse")
    widget.preview_every.value = preview_every


def add_pair(viewer, widget, scribbles):
    image, labels, _ = scribbles
    viewer.add_image(image, name="cells")
    layer = viewer.add_labels(labels, name="scribbles")  # the active layer: painted in
    widget.reset_choices()
    return layer


def no_threads_left(qtbot):
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=60_000)
    names = [t.name for t in threading.enumerate()]
    assert not any(n.startswith("tile-sampler") for n in names), names


def visible_box(layer):
    corners = np.asarray(layer.corner_pixels)
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(corners[0], corners[1], strict=True))


def test_preview_appears_and_follows_the_view(shown_viewer, widget, qtbot, scribbles):
    viewer = shown_viewer
    labels = add_pair(viewer, widget, scribbles)
    tiny(widget)
    assert widget.train() is not None, widget.status.value
    preview = widget.live.preview
    qtbot.waitUntil(lambda: len(preview.shown) >= 1, timeout=60_000)
    layer = viewer.layers["cells preview"]
    assert layer.data.shape == labels.data.shape
    # painting goes on in the labels layer, drawn above the preview
    assert viewer.layers.selection.active is labels
    assert viewer.layers.index(labels) > viewer.layers.index(layer)
    first = preview.shown[-1]
    assert first.index == visible_box(labels)  # the whole image is in view at first
    assert set(np.unique(layer.data)) <= {0, 1, 2}  # painted values: 1 background, 2 nuclei

    # Zoom into the lower right: the next preview covers that part only.
    viewer.camera.center = (150, 150)
    viewer.camera.zoom = 8 * viewer.camera.zoom
    qtbot.waitUntil(lambda: visible_box(labels) != first.index, timeout=10_000)
    box = visible_box(labels)
    assert box[0].start > 0 and box[1].start > 0
    qtbot.waitUntil(lambda: preview.shown[-1].index == box, timeout=60_000)
    assert widget.trainer.status == "running"  # the preview never stopped training

    widget.stop()
    qtbot.waitUntil(lambda: not widget.running and not preview.running, timeout=60_000)
    no_threads_left(qtbot)


def test_strokes_painted_while_training_reach_the_sampler(shown_viewer, widget, qtbot, scribbles):
    labels = add_pair(shown_viewer, widget, scribbles)
    _, _, instances = scribbles
    tiny(widget)
    widget.live_preview.value = False
    widget.train()
    trainer = widget.trainer
    qtbot.waitUntil(lambda: trainer.step >= 2, timeout=60_000)
    sampler = trainer._sampler
    before = sampler.pairs[0].block_counts[:, 2].sum()

    # A nucleus of the lower half painted with data_setitem (a fill), a brush dab of
    # background with paint (a stroke).
    nucleus = next(i for i in np.unique(instances[120:, 120:]) if i)
    where = np.nonzero(instances == nucleus)  # (the crop is tiled: some copies are painted)
    new = int(np.count_nonzero(labels.data[where] != 2))
    labels.data_setitem(where, 2)
    labels.brush_size = 5
    labels.paint((180, 20), 1)
    assert widget.live.follower.boxes == 2
    qtbot.waitUntil(lambda: sampler.boxes_taken == 2, timeout=30_000)
    assert sampler.pairs[0].block_counts[:, 2].sum() == before + new
    assert any(start[0] <= 180 < stop[0] for _, start, stop in sampler.recent)
    widget.stop()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    labels.paint((100, 100), 1)  # after the run: not followed any more
    assert widget.live.follower is None


def test_continue_resumes_the_run(shown_viewer, widget, qtbot, scribbles):
    add_pair(shown_viewer, widget, scribbles)
    tiny(widget, iterations=3)
    widget.live_preview.value = False
    widget.model_name.value = "cont"
    widget.train()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    trainer = widget.trainer
    assert trainer.status == "finished" and widget.continue_button.enabled
    first = widget.model
    optimizer = trainer._state.optimizer

    widget.iterations.value = 2
    widget.continue_button.native.click()
    assert widget.running and not widget.continue_button.enabled
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.trainer is trainer and trainer.step == 5
    assert trainer._state.optimizer is optimizer
    assert {int(s["step"]) for s in optimizer.state.values()} == {5}
    assert widget.plot.steps == [1, 2, 3, 4, 5]
    names = trained_models(shown_viewer).names()
    assert names[0] == "cont" and "cont [1]" not in names  # replaced, not added
    assert trained_models(shown_viewer).get("cont") is widget.model is not first
    assert widget.model.metadata["training"]["steps_done"] == 5


def test_start_from_a_model_fine_tunes_it(shown_viewer, widget, qtbot, scribbles, tmp_path):
    from napari_tiled_unet import load_model

    add_pair(shown_viewer, widget, scribbles)
    tiny(widget, iterations=2)
    widget.live_preview.value = False
    default_rate = widget.learning_rate.value
    widget.start_from.value = BUNDLED_MODEL
    assert not widget.base_channels.enabled and not widget.depth.enabled
    assert widget.learning_rate.value == f"{FINETUNE_LR:g}"
    assert (
        "Fine-tuning" in widget.start_note.value and f"{FINETUNE_LR:g}" in widget.start_note.value
    )
    widget.start_from.value = NEW_NETWORK
    assert widget.base_channels.enabled and widget.learning_rate.value == default_rate

    widget.train()  # a new network first, offered as "trained: cells"
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    base = widget.model
    assert f"trained: {'cells'}" in widget.start_from.choices

    widget.start_from.value = "trained: cells"
    widget.base_channels.value = 8  # ignored: the model keeps its architecture
    widget.model_name.value = "tuned"
    widget.train()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    tuned = widget.model
    assert tuned.config == base.config
    assert tuned.metadata["training"]["fine_tuned_from"] == "UNet object"
    assert tuned.metadata["training"]["config"]["learning_rate"] == FINETUNE_LR

    path = tmp_path / "tuned.pt"
    widget.save_model(path)
    widget.start_from.value = MODEL_FILE
    assert widget.start_file.visible
    widget.start_file.value = path
    widget.model_name.value = "from file"
    widget.train()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.model.metadata["training"]["fine_tuned_from"] == str(path)
    assert load_model(path).config == base.config


def test_a_missing_model_file_is_explained(shown_viewer, widget, scribbles, errors):
    add_pair(shown_viewer, widget, scribbles)
    widget.start_from.value = MODEL_FILE
    assert widget.train() is None
    assert "No model file to fine-tune" in errors[-1]


def test_save_while_training_writes_a_whole_model(shown_viewer, widget, qtbot, scribbles, tmp_path):
    from napari_tiled_unet import load_model

    add_pair(shown_viewer, widget, scribbles)
    tiny(widget)
    widget.live_preview.value = False
    widget.train()
    qtbot.waitUntil(lambda: widget.trainer.step >= 2 and widget.save_button.enabled, timeout=60_000)
    path = tmp_path / "mid.pt"
    widget.save_model(path)  # before the first validation: weights copied after a step
    qtbot.waitUntil(path.exists, timeout=30_000)
    assert widget.running
    model = load_model(path)
    assert model.metadata["training"]["steps_done"] >= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mid.pt"]  # no temporary file left


def test_closing_the_viewer_while_training_and_previewing_stops_every_thread(
    shown_viewer, qtbot, scribbles, monkeypatch
):
    entered = threading.Event()
    original = _preview.compute_preview

    def slow_preview(*args, **kwargs):
        entered.set()
        while True:  # a long preview: only a cancel ends it
            time.sleep(0.02)
            yield None
        return (yield from original(*args, **kwargs))

    monkeypatch.setattr(_preview, "compute_preview", slow_preview)
    widget = TrainWidget(shown_viewer)
    shown_viewer.window.add_dock_widget(widget, name="Train")
    add_pair(shown_viewer, widget, scribbles)
    tiny(widget)
    widget.train()
    trainer = widget.trainer
    qtbot.waitUntil(lambda: trainer.step >= 1 and entered.is_set(), timeout=60_000)
    assert widget.live.preview.running

    shown_viewer.close()
    assert trainer.status == "stopped"
    no_threads_left(qtbot)


def test_fine_tuning_the_bundled_model_keeps_its_architecture(
    shown_viewer, widget, qtbot, nuclei_pair
):
    from napari_tiled_unet import load_model
    from napari_tiled_unet.model.modelfile import default_model_path

    image, instances = nuclei_pair
    shown_viewer.add_image(image, name="cells")
    shown_viewer.add_labels(instances, name="masks")
    widget.reset_choices()
    widget.label_mode.value = "instance"
    widget.start_from.value = BUNDLED_MODEL
    widget.tile_size.value, widget.batch_size.value, widget.iterations.value = 64, 1, 1
    widget.augmentation.value, widget.device.value = False, "cpu"
    widget.live_preview.value = False
    assert widget.train() is not None, widget.status.value
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    bundled = load_model(default_model_path())
    assert widget.model.config == bundled.config
    assert widget.model.info.normalization == bundled.info.normalization
    assert widget.model.metadata["training"]["fine_tuned_from"] == str(default_model_path())
