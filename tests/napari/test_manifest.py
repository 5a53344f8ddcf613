"""The npe2 manifest: found through the entry point, valid, importable, and docked by name."""

from __future__ import annotations

import os
from pathlib import Path

from npe2 import PluginManifest

ROOT = Path(__file__).resolve().parents[2]


def test_manifest_contributions():
    manifest = PluginManifest.from_distribution("napari-tiled-unet")
    assert manifest.name == "napari-tiled-unet"
    assert manifest.display_name == "Tiled U-Net"
    assert {w.display_name for w in manifest.contributions.widgets} == {"Predict", "Train"}
    samples = {s.key: s.display_name for s in manifest.contributions.sample_data}
    assert samples["nuclei"] == "Nuclei (real)"
    assert samples["synthetic_nuclei"] == "Synthetic nuclei"
    manifest.validate_imports()  # every python_name resolves


def test_top_level_manifest_is_a_relative_link_to_the_package_one():
    link = ROOT / "napari.yaml"
    assert link.is_symlink()
    target = os.readlink(link)
    assert not os.path.isabs(target)
    assert link.resolve() == (ROOT / "src" / "napari_tiled_unet" / "napari.yaml").resolve()


def test_predict_widget_docks_from_the_plugin_menu(viewer):
    from napari_tiled_unet._napari.predict_widget import PredictWidget

    _dock, widget = viewer.window.add_plugin_dock_widget("napari-tiled-unet", "Predict")
    assert isinstance(widget, PredictWidget)


def test_train_widget_docks_from_the_plugin_menu(viewer):
    from napari_tiled_unet._napari.train_widget import TrainWidget

    _dock, widget = viewer.window.add_plugin_dock_widget("napari-tiled-unet", "Train")
    assert isinstance(widget, TrainWidget)
