"""File ▸ Open Sample ▸ Tiled U-Net: each sample opens as an image and its instance labels."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize(
    ("key", "name", "shape"),
    [("synthetic_nuclei", "synthetic nuclei", (256, 256)), ("nuclei", "nuclei", (608, 1020))],
)
def test_sample_opens_as_image_and_labels(viewer, key, name, shape):
    viewer.open_sample("napari-tiled-unet", key)
    assert [layer.name for layer in viewer.layers] == [name, f"{name} reference masks"]
    image, labels = viewer.layers
    assert image.__class__.__name__ == "Image" and labels.__class__.__name__ == "Labels"
    assert image.data.shape == labels.data.shape == shape
    assert image.data.dtype == np.uint16
    assert labels.data.max() > 10, "a sample should hold many nuclei"
    # Nuclei are brighter than the background.
    assert image.data[labels.data > 0].mean() > image.data[labels.data == 0].mean()


def test_synthetic_sample_is_reproducible(tmp_path):
    """The shipped synthetic files are exactly what the seeded script writes."""
    import importlib.util
    from pathlib import Path

    import tifffile

    from napari_tiled_unet._napari.sample_data import SAMPLE_DIR

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "make_synthetic_sample.py"
    if not script.is_file():
        pytest.skip("benchmarks/ is not part of this installation")
    spec = importlib.util.spec_from_file_location("make_synthetic_sample", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    image, labels = module.make_sample()
    np.testing.assert_array_equal(image, tifffile.imread(SAMPLE_DIR / "synthetic_nuclei.tif"))
    np.testing.assert_array_equal(
        labels, tifffile.imread(SAMPLE_DIR / "synthetic_nuclei_labels.tif")
    )
