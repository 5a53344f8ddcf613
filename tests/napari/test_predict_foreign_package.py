"""A foreign bioimage.io package (torchscript weights) chosen as the Predict widget's model
file, in a real viewer. Needs the ``bioimageio`` extra (skipped without it)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bioimageio.core")
sys.path.insert(0, str(Path(__file__).parents[1] / "bioimageio"))  # the package builders

from _packages import build_coded_package, build_package

from napari_tiled_unet.bioimageio.foreign import predict_foreign


@pytest.fixture
def package(tmp_path):
    (tmp_path / "pkg").mkdir()
    path, _net = build_package(tmp_path / "pkg")
    return path


def test_a_foreign_package_reads_and_predicts_in_the_widget(
    viewer, predict_widget, qtbot, wait_done, package
):
    rng = np.random.default_rng(0)
    image = (rng.random((70, 93)) * 1000).astype(np.float32)
    layer = viewer.add_image(image, name="cells")
    predict_widget.reset_choices()
    predict_widget.image.value = layer
    predict_widget.model_file.value = package
    qtbot.waitUntil(lambda: "Reading" not in predict_widget.reading.value, timeout=30_000)
    assert "YX" in predict_widget.reading.value, predict_widget.reading.value

    predict_widget.run()
    wait_done(predict_widget)
    result = viewer.layers["cells labels"]
    np.testing.assert_array_equal(result.data, predict_foreign(image, package, output="labels"))


def test_package_code_is_read_only_when_the_box_is_ticked(
    viewer, predict_widget, qtbot, package, tmp_path
):
    from _packages import ThreeConv

    coded = build_coded_package(tmp_path / "pkg", package, ThreeConv().eval())
    layer = viewer.add_image(np.ones((40, 40), np.float32), name="cells")
    predict_widget.reset_choices()
    predict_widget.image.value = layer
    predict_widget.model_file.value = coded
    qtbot.waitUntil(lambda: "Reading" not in predict_widget.reading.value, timeout=30_000)
    assert "trust" in predict_widget.reading.value.lower(), predict_widget.reading.value
    predict_widget.trust_package_code.value = True
    qtbot.waitUntil(lambda: "Reading" not in predict_widget.reading.value, timeout=30_000)
    assert "YX" in predict_widget.reading.value, predict_widget.reading.value
