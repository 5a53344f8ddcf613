import numpy as np
import pytest

from _helpers import drain
from napari_tiled_unet.io.pyramid import iter_write_pyramid, level_shapes, strided_levels


def test_level_shapes_halve_yx_until_the_coarsest_edge():
    assert level_shapes((3, 100, 41), coarsest=30) == [(3, 100, 41), (3, 50, 21), (3, 25, 11)]
    assert level_shapes((40, 20), coarsest=64) == [(40, 20)]
    assert level_shapes((100, 9, 3), yx=(0, 1), coarsest=30) == [
        (100, 9, 3),
        (50, 5, 3),
        (25, 3, 3),
    ]


@pytest.mark.parametrize("shape", [(45, 37), (2, 45, 37)])
def test_written_levels_are_every_other_pixel_of_the_level_before(shape, tmp_path):
    data = np.random.default_rng(0).integers(0, 1000, shape).astype(np.int32)
    _, levels = drain(iter_write_pyramid(data, tmp_path, coarsest=8, block=7, chunk=5))
    assert len(levels) == 4 and levels[0] is data
    for k, level in enumerate(levels):
        np.testing.assert_array_equal(level[...], data[..., :: 2**k, :: 2**k])
        assert level.dtype == data.dtype


def test_strided_levels_of_a_memmap_are_views(tmp_path):
    data = np.lib.format.open_memmap(tmp_path / "a.npy", "w+", np.uint16, (3, 50, 40))
    data[:] = np.arange(data.size).reshape(data.shape)
    levels = strided_levels(data, coarsest=12)
    assert [level.shape for level in levels] == [(3, 50, 40), (3, 25, 20), (3, 13, 10), (3, 7, 5)]
    assert all(np.shares_memory(level, data) for level in levels)
    np.testing.assert_array_equal(levels[2], data[:, ::4, ::4])
