"""Output TIFFs others can read: a class axis, never RGB (issue 15 §7)."""

import warnings

import numpy as np
import pytest
import tifffile

from _nets import tiny_unet
from napari_tiled_unet import save_model
from napari_tiled_unet.cli import main
from napari_tiled_unet.io.store import create_output, tiff_axes_metadata
from napari_tiled_unet.io.tiff import open_tiff, tiff_axes


def _read_strictly(path):
    """Series axes, shape, photometric and pixels, failing on any tifffile warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return series.axes, series.shape, tif.pages[0].photometric, tif.is_ome, series.asarray()


def test_three_class_probabilities_read_back_as_classes(tmp_path, rng):
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, (rng.random((70, 90)) * 4000).astype(np.uint16))
    model = save_model(tiny_unet("same", depth=2, num_classes=3), tmp_path / "m.pt")
    out, probs = tmp_path / "labels.tif", tmp_path / "probs.tif"
    argv = ["predict", str(image), "--model", str(model), "-o", str(out), "--device", "cpu"]
    assert main([*argv, "--kind", "labels", "--probabilities", str(probs)]) == 0
    axes, shape, photometric, ome, data = _read_strictly(probs)
    assert axes == "CYX" and shape == (3, 70, 90) and ome
    assert photometric == tifffile.PHOTOMETRIC.MINISBLACK  # not RGB
    np.testing.assert_allclose(data.sum(0), 1, atol=1e-5)
    # The package's own reader and axis hint agree.
    assert tiff_axes(probs) == "CYX" and open_tiff(probs).shape == (3, 70, 90)
    assert _read_strictly(out)[:2] == ("YX", (70, 90))


@pytest.mark.parametrize(
    ("axes", "shape"), [("CZYX", (3, 4, 40, 300)), ("CTYX", (3, 2, 40, 50)), ("TZYX", (2, 3, 8, 9))]
)
def test_streamed_outputs_carry_their_axes(tmp_path, rng, axes, shape):
    data = rng.random(shape).astype(np.float32)
    path = tmp_path / "out.tif"
    with create_output(path, shape, np.float32, axes=axes, tile=256) as out:
        for k in range(shape[0]):  # filled block by block, as the engine does
            out[k] = data[k]
    got_axes, got_shape, photometric, ome, read = _read_strictly(path)
    assert (got_axes, got_shape, ome) == (axes, shape, True)
    assert photometric == tifffile.PHOTOMETRIC.MINISBLACK
    np.testing.assert_array_equal(read, data)


def test_axes_ome_cannot_name_keep_tifffile_metadata():
    assert tiff_axes_metadata("CYX") == {"ome": True, "metadata": {"axes": "CYX"}}
    assert tiff_axes_metadata("YXC") == {"metadata": {"axes": "YXC"}}  # OME wants YX last
    assert tiff_axes_metadata(None) == {"metadata": {}}
