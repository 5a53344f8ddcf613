import sys

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from _helpers import drain
from napari_tiled_unet.axes import AxesView
from napari_tiled_unet.model.geometry import TileGeometry
from napari_tiled_unet.tiling.plan import plan_tiles
from napari_tiled_unet.tiling.stitch import iter_run_plan, mirror_indices, read_tile


def _copy_through(image, plan, fn):
    out = np.zeros(image.shape, np.float32)
    drain(iter_run_plan(image, plan, lambda batch, tiles: fn(batch), out, batch_size=3))
    return out


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 70), st.integers(1, 70)),
    grid=st.sampled_from([1, 2, 4, 8]),
    before=st.integers(0, 9),
    after=st.integers(0, 9),
    edge_steps=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_pointwise_predictor_comes_back_exact(shape, grid, before, after, edge_steps, seed):
    """x + 1 through any plan equals x + 1; every pixel is written exactly once."""
    geometry = TileGeometry(grid=grid, context_before=before, context_after=after)
    edge = geometry.nearest_valid_sizes(before + after + grid * edge_steps)[1]
    plan = plan_tiles(shape, geometry, (edge, edge))
    image = np.random.default_rng(seed).random((1, *shape), dtype=np.float32)
    np.testing.assert_array_equal(_copy_through(image, plan, lambda b: b + 1), image + 1)

    hits = np.zeros(shape, int)
    for tile in plan:
        hits[tile.write] += 1
        assert all(s.start % grid == 0 for s in tile.write)  # origins on the network grid
        assert all(
            (s.start - rs) == before for s, rs in zip(tile.write, tile.read_start, strict=True)
        )
    assert (hits == 1).all()


def test_plan_length_known_up_front_and_tiles_shrink_to_spread_the_work():
    geometry = TileGeometry(grid=16, context_before=40, context_after=40)
    plan = plan_tiles((301, 517), geometry, (256, 256))
    assert len(plan) == 2 * 3  # a 256 px tile writes 176 px: 2 along Y, 3 along X
    # Two tiles writing 160 px cover the 301 rows; 256 px tiles would leave the second
    # writing 125 of its 176 px.
    assert plan.tile_shape == (240, 256)
    assert plan.stride == (160, 176)
    small = plan_tiles((20, 37), geometry, (256, 256))
    assert len(small) == 1
    assert small.tile_shape == (112, 128)  # 40 + (32 | 48) + 40: smallest tiles covering it


def test_tile_too_small_for_context_names_the_minimum():
    geometry = TileGeometry(grid=16, context_before=40, context_after=40)
    with pytest.raises(ValueError, match="use at least 96"):
        plan_tiles((300, 300), geometry, (80, 80))


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_mirror_padding_matches_numpy_reflect(n):
    image = np.arange(n, dtype=np.float32)[None, None, :].repeat(3, axis=1)
    geometry = TileGeometry(grid=1, context_before=23, context_after=23)
    plan = plan_tiles((3, n), geometry, (50, 50))
    tile = plan[0]
    got = read_tile(image, tile)
    assert tile.read_start == (-23, -23)
    padded = np.pad(image, [(0, 0), (23, 50), (23, 50)], mode="reflect")
    rows, cols = tile.read_shape
    np.testing.assert_array_equal(got, padded[:, :rows, :cols])
    assert mirror_indices(-3, 3, 1).tolist() == [0, 0, 0]


def test_reads_only_the_tile_window():
    """A tile read asks the array-like for one bounded window, never the whole image."""

    class Recorder:
        def __init__(self, data):
            self.data, self.shape, self.dtype, self.keys = data, data.shape, data.dtype, []

        def __getitem__(self, key):
            self.keys.append(key)
            return self.data[key]

    source = Recorder(np.zeros((1, 1000, 1000), np.float32))
    geometry = TileGeometry(grid=16, context_before=40, context_after=40)
    plan = plan_tiles((1000, 1000), geometry, (256, 256))
    read_tile(source, plan[7])
    (key,) = source.keys
    assert all(s.stop - s.start <= 256 for s in key[1:])


def _mapped_kib(path) -> int:
    """Resident KiB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):
            inside = line.rstrip().endswith(str(path))
        elif inside and first == "Rss:":
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_memmapped_input_does_not_stay_resident(tmp_path):
    """Running a plan over a read-only memmap drops the file pages it read after each batch."""
    path = tmp_path / "image.tif"
    data = np.arange(2048 * 2048, dtype=np.uint16).reshape(2048, 2048)
    tifffile.imwrite(path, data)
    image = tifffile.memmap(path, mode="r")
    plan = plan_tiles(
        image.shape, TileGeometry(grid=16, context_before=16, context_after=16), (256, 256)
    )
    out = np.zeros(image.shape, np.uint16)
    single_channel = AxesView(image, (0, 1), new_axis=True)  # (1, Y, X), read lazily
    drain(iter_run_plan(single_channel, plan, lambda batch, tiles: batch[:, 0], out))
    np.testing.assert_array_equal(out, data)
    assert _mapped_kib(path) < 1024  # of 8 MiB read

    np.asarray(image).sum()  # the check can fail: a plain read leaves the pages resident
    assert _mapped_kib(path) > 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_predict_on_a_memmapped_stack_drops_pages_too(tmp_path):
    """Through the public API, with a layout view (planes of a stack) around the memmap."""
    from _nets import tiny_unet
    from napari_tiled_unet import predict

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.random.default_rng(0).random((2, 1024, 1024), dtype=np.float32))
    image = tifffile.memmap(path, mode="r")
    labels = predict(image, tiny_unet("same", depth=2), tile_shape=(256, 256), device="cpu")
    assert labels.shape == (2, 1024, 1024)
    assert _mapped_kib(path) < 1024  # of 8 MiB read


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_normalisation_subsample_of_a_memmap_keeps_few_pages_resident(tmp_path, monkeypatch):
    """The percentile subsample is read band by band, the file pages dropped after each band.

    Read at once, a strided subsample maps the pages of every sampled row (here all 32 MiB of
    the file) until it is done; the CLI's peak RSS on a 1 GiB TIFF jumped by ~0.5 GiB that way.
    """
    from napari_tiled_unet import normalization
    from napari_tiled_unet.normalization import Normalization

    path = tmp_path / "image.tif"
    data = np.random.default_rng(0).integers(0, 60000, (2048, 8192), dtype=np.uint16)
    tifffile.imwrite(path, data)
    image = tifffile.memmap(path, mode="r")
    resident = []
    release = normalization.release_mapped_pages

    def measure_then_release(array):
        resident.append(_mapped_kib(path))
        release(array)

    monkeypatch.setattr(normalization, "release_mapped_pages", measure_then_release)
    resolved = Normalization(low=1, high=99.8).resolve(image)

    lo, hi = np.percentile(data[::2, ::2].astype(np.float64), [1, 99.8])  # SAMPLE_PIXELS: step 2
    assert resolved.offset == pytest.approx(lo)
    assert resolved.scale == pytest.approx(hi - lo)
    assert max(resident) < 8 * 1024  # KiB, of 32 MiB read
    assert len(resident) >= 8
    assert _mapped_kib(path) < 1024


def test_closing_the_run_does_not_wait_for_a_read_in_flight():
    """Cancel reaches a prefetch read that blocks (a huge compressed tile): close() returns."""
    import threading

    from napari_tiled_unet.tiling.stitch import iter_run_plan

    release, reading = threading.Event(), threading.Event()

    class SlowImage:
        shape, dtype, ndim = (1, 64, 64), np.dtype(np.float32), 3

        def __init__(self):
            self.reads = 0

        def __getitem__(self, key):
            self.reads += 1
            if self.reads > 1:  # the prefetch of the second batch blocks until released
                reading.set()
                release.wait(60)
            return np.zeros((1, *(s.stop - s.start for s in key[1:])), np.float32)

    geometry = TileGeometry(grid=4, context_before=4, context_after=4)
    plan = plan_tiles((64, 64), geometry, (24, 24))
    assert len(plan) > 2
    out = np.zeros((64, 64), np.float32)
    run = iter_run_plan(SlowImage(), plan, lambda batch, tiles: batch[:, 0], out)
    assert next(run) == 1
    assert reading.wait(60)
    closer = threading.Thread(target=run.close)
    closer.start()
    closer.join(30)  # a hang detector, not a timing: it returns at once when it works
    stuck = closer.is_alive()
    release.set()
    assert not stuck, "closing the run waited for the blocked read"
