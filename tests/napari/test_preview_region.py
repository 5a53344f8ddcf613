"""Where a live preview reads and writes, for the layouts a training image can have."""

from __future__ import annotations

import numpy as np

from napari_tiled_unet._napari._preview import preview_region
from napari_tiled_unet.axes import Layout


def test_a_2d_view_reads_the_box_with_context_clipped_to_the_image():
    layout = Layout("YX", (100, 200), 2)
    region = preview_region(layout, (10, 50), (40, 150), (0, 0), {0, 1}, {"Y": 16, "X": 16})
    assert region.index == (slice(10, 40), slice(50, 150))
    assert region.crop == (slice(0, 56), slice(34, 166))
    assert region.inner == (slice(10, 40), slice(16, 116))
    assert region.crop_axes == "YX"
    image = np.arange(100 * 200).reshape(100, 200)
    assert np.array_equal(image[region.crop][region.inner], image[region.index])


def test_a_movie_previews_the_current_frame_and_channels_come_whole():
    layout = Layout("TCYX", (5, 2, 64, 64), 2)
    region = preview_region(layout, (0, 0, 0), (5, 64, 64), (3, 20, 20), {1, 2}, {"Y": 8, "X": 8})
    assert region.index == (3, slice(0, 64), slice(0, 64))
    assert region.crop == (3, slice(None), slice(0, 64), slice(0, 64))
    assert region.crop_axes == "CYX"


def test_a_3d_model_reads_planes_around_the_current_one_and_writes_that_plane():
    layout = Layout("ZYX", (30, 64, 64), 3)
    region = preview_region(
        layout, (0, 8, 8), (30, 24, 24), (12, 0, 0), {1, 2}, {"Z": 4, "Y": 8, "X": 8}
    )
    assert region.index == (slice(12, 13), slice(8, 24), slice(8, 24))
    assert region.crop == (slice(8, 17), slice(0, 32), slice(0, 32))
    assert region.inner == (slice(4, 5), slice(8, 24), slice(8, 24))
    assert region.crop_axes == "ZYX"


def test_a_view_outside_the_layer_previews_nothing():
    layout = Layout("YX", (100, 200), 2)
    assert preview_region(layout, (0, 0), (0, 0), (0, 0), {0, 1}, {"Y": 4, "X": 4}) is None
