"""The plugin's TIFF reader opens large files as lazy Image layers."""

from __future__ import annotations

import numpy as np
import tifffile
import zarr


def test_reader_opens_a_tiled_tiff_lazily(viewer, tmp_path):
    image = np.random.default_rng(0).integers(0, 4000, (100, 120), dtype=np.uint16)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, image, tile=(32, 32), compression="zlib", bigtiff=True)
    [layer] = viewer.open(path, plugin="napari-tiled-unet")
    assert layer.name == "big" and not layer.multiscale
    assert isinstance(layer.data, zarr.Array)  # not read into memory
    np.testing.assert_array_equal(layer.data[:], image)


def test_reader_opens_a_pyramid_as_multiscale(viewer, tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (128, 96), dtype=np.uint8)
    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(image, tile=(32, 32), subifds=1, compression="zlib")
        tw.write(image[::2, ::2], tile=(32, 32), subfiletype=1, compression="zlib")
    [layer] = viewer.open(path, plugin="napari-tiled-unet")
    assert layer.multiscale and [d.shape for d in layer.data] == [(128, 96), (64, 48)]
    np.testing.assert_array_equal(layer.data[0][:], image)


def test_reader_declines_other_files(tmp_path):
    from napari_tiled_unet._napari.reader import get_reader

    assert get_reader("image.png") is None
    assert get_reader(["a.tif", "b.tif"]) is None
    assert get_reader(str(tmp_path / "missing.tif")) is None  # only files it can read
    tifffile.imwrite(tmp_path / "image.TIF", np.zeros((4, 4), np.uint8))
    assert get_reader(str(tmp_path / "image.TIF")) is not None


def test_reader_gives_large_memmapped_images_strided_levels(viewer, tmp_path, monkeypatch):
    from napari_tiled_unet._napari import reader
    from napari_tiled_unet.io import pyramid

    monkeypatch.setattr(reader, "MULTISCALE_PIXELS", 100 * 100)
    monkeypatch.setattr(pyramid, "COARSEST_EDGE", 64)
    image = np.random.default_rng(0).integers(0, 4000, (300, 200), dtype=np.uint16)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, image)  # uncompressed, contiguous: memory-mapped
    [layer] = viewer.open(path, plugin="napari-tiled-unet")
    assert layer.multiscale
    assert [d.shape for d in layer.data] == [(300, 200), (150, 100), (75, 50), (38, 25)]
    assert isinstance(layer.data[0], np.memmap)
    np.testing.assert_array_equal(layer.data[2], image[::4, ::4])
