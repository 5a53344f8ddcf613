"""Fixtures for viewer tests: a real napari viewer, tiny model files, captured notifications."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from napari.utils.notifications import NotificationSeverity, notification_manager

import _nets


def _tiny_unet(num_classes: int = 2, train: bool = False, **overrides):
    """The shared ``_nets.tiny_unet`` (base 4 channels, depth 2), 2 classes unless told."""
    return _nets.tiny_unet(num_classes=num_classes, **overrides).train(train)


@pytest.fixture(autouse=True)
def _seeded_single_thread():
    """Seed torch; one intra-op thread keeps tiny models fast on small shared machines."""
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_unet():
    """Factory of small random U-Nets: ``tiny_unet(num_classes=2, train=False, **overrides)``."""
    return _tiny_unet


@pytest.fixture
def model_file(tmp_path):
    """A tiny 2-class model saved with percentile normalisation."""
    from napari_tiled_unet import Normalization, save_model

    return save_model(_tiny_unet(), tmp_path / "tiny.pt", normalization=Normalization().to_dict())


@pytest.fixture
def image():
    """A 48x40 float32 image with some structure."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :40]
    return (np.sin(yy / 5) * np.cos(xx / 7) + 0.1 * rng.normal(size=(48, 40))).astype(np.float32)


@pytest.fixture
def nuclei_pair():
    """A 96x96 crop of the synthetic sample: (uint16 image, uint16 instance labels)."""
    import tifffile

    from napari_tiled_unet._napari.sample_data import SAMPLE_DIR

    image = tifffile.imread(SAMPLE_DIR / "synthetic_nuclei.tif")[:96, :96]
    labels = tifffile.imread(SAMPLE_DIR / "synthetic_nuclei_labels.tif")[:96, :96]
    return image, labels


def _notifications(severity: NotificationSeverity):
    """Messages of the notifications of ``severity`` sent while the generator is open."""
    messages: list[str] = []

    def collect(notification):
        if notification.severity == severity:
            messages.append(str(notification.message))

    notification_manager.notification_ready.connect(collect)
    yield messages
    notification_manager.notification_ready.disconnect(collect)


@pytest.fixture
def errors():
    """Messages of the error notifications sent during the test, in order."""
    yield from _notifications(NotificationSeverity.ERROR)


@pytest.fixture
def warnings_shown():
    """Messages of the warning notifications sent during the test, in order."""
    yield from _notifications(NotificationSeverity.WARNING)


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def train_widget(viewer, qtbot):
    """The Train widget docked in a viewer; at teardown a running training is stopped, and it
    and any live preview are waited for."""
    from napari_tiled_unet._napari.train_widget import TrainWidget

    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    yield widget
    if widget.running:
        widget.stop()
        qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    qtbot.waitUntil(lambda: not widget.live.preview.running, timeout=60_000)


@pytest.fixture
def predict_widget(viewer, qtbot):
    """The Predict widget docked in a viewer; waits for a running prediction at teardown."""
    from napari_tiled_unet._napari.predict_widget import PredictWidget

    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    yield widget
    qtbot.waitUntil(lambda: not widget.reading_model, timeout=30_000)
    if widget.running:
        widget.cancel()
        qtbot.waitUntil(lambda: not widget.running, timeout=30_000)


@pytest.fixture
def wait_done(qtbot):
    """``wait_done(widget)`` processes Qt events until the widget's job has finished."""

    def wait(widget, timeout: int = 60_000) -> None:
        qtbot.waitUntil(lambda: not widget.running, timeout=timeout)

    return wait
