"""Lazy TIFF input and streamed, atomic TIFF/zarr output."""

import numpy as np
import pytest
import tifffile
import zarr

from _helpers import drain
from _nets import tiny_unet
from napari_tiled_unet import predict
from napari_tiled_unet.inference import iter_predict_to_file
from napari_tiled_unet.io.store import create_output, open_output
from napari_tiled_unet.io.tiff import open_tiff


@pytest.fixture
def image(rng):
    return (rng.random((150, 170)) * 4000).astype(np.uint16)


def test_tiled_compressed_tiff_opens_as_zarr_and_predicts_like_numpy(tmp_path, image):
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, image, tile=(64, 64), compression="zlib", bigtiff=True)
    lazy = open_tiff(path)
    assert isinstance(lazy, zarr.Array) and not isinstance(lazy, np.ndarray)
    assert lazy.chunks == (64, 64)  # decoded tile by tile, never whole
    net = tiny_unet()
    expected = predict(image, net, tile_shape=(64, 64))
    np.testing.assert_array_equal(predict(lazy, net, tile_shape=(64, 64)), expected)


def test_contiguous_tiff_is_memory_mapped(tmp_path, image):
    tifffile.imwrite(tmp_path / "plain.tif", image)
    opened = open_tiff(tmp_path / "plain.tif")
    assert isinstance(opened, np.memmap)
    np.testing.assert_array_equal(opened, image)


def test_pyramid_opens_level_zero_by_default(tmp_path, image):
    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(image, tile=(64, 64), subifds=1, compression="zlib")
        tw.write(image[::2, ::2], tile=(64, 64), subfiletype=1, compression="zlib")
    np.testing.assert_array_equal(open_tiff(path)[:], image)
    np.testing.assert_array_equal(open_tiff(path, level=1)[:], image[::2, ::2])
    with pytest.raises(ValueError, match="pyramid level 2"):
        open_tiff(path, level=2)


@pytest.mark.parametrize("layout", ["tiled", "contiguous"])
def test_truncated_tiff_is_a_clear_error(tmp_path, image, layout):
    path = tmp_path / "cut.tif"
    options = {"tile": (64, 64), "compression": "zlib"} if layout == "tiled" else {}
    tifffile.imwrite(path, image, **options)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated"):
        open_tiff(path)


def test_non_tiff_is_a_clear_error(tmp_path):
    (tmp_path / "x.tif").write_text("hello")
    with pytest.raises(ValueError, match="not a readable TIFF"):
        open_tiff(tmp_path / "x.tif")


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
@pytest.mark.parametrize("output", ["labels", "probabilities"])
def test_streamed_output_equals_in_memory_result(tmp_path, image, suffix, output):
    net = tiny_unet()
    path = tmp_path / f"result{suffix}"
    _, result = drain(
        iter_predict_to_file(image, path, net, output=output, tile=64, tile_shape=(64, 64))
    )
    expected = predict(image, net, output=output, tile_shape=(64, 64))
    assert isinstance(result, zarr.Array) and result.dtype == expected.dtype
    np.testing.assert_array_equal(result[:], expected)
    if suffix == ".tif":
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            assert tif.is_bigtiff and page.is_tiled and page.compression == 8  # zlib
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_cancel_mid_write_leaves_previous_output_and_no_temporaries(tmp_path, image, suffix):
    path = tmp_path / f"result{suffix}"
    drain(iter_predict_to_file(image[:32, :32], path, tiny_unet(), tile=16))
    before = open_output(path)[:]
    events = iter_predict_to_file(image, path, tiny_unet(), tile_shape=(64, 64))
    next(events), next(events)  # a tile written into the temporary store
    assert len(list(tmp_path.iterdir())) > 1
    events.close()  # what napari's Cancel does
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    np.testing.assert_array_equal(open_output(path)[:], before)


def test_error_mid_write_leaves_no_file(tmp_path, image):
    bad = image[:60, :60].astype(np.float32)
    bad[55, 55] = np.nan  # found in the last tile
    with pytest.raises(ValueError, match="NaN"):
        drain(iter_predict_to_file(bad, tmp_path / "o.tif", tiny_unet(), tile_shape=(64, 64)))
    assert list(tmp_path.iterdir()) == []


def test_create_output_checks_the_destination_before_work(tmp_path):
    with pytest.raises(ValueError, match=r"\.tif, \.tiff or \.zarr"):
        with create_output(tmp_path / "o.png", (4, 4), np.uint8):
            pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with create_output(tmp_path / "no" / "o.tif", (4, 4), np.uint8):
            pass
    (tmp_path / "d.tif").mkdir()
    with pytest.raises(IsADirectoryError):
        with create_output(tmp_path / "d.tif", (4, 4), np.uint8):
            pass


def test_disk_full_mid_write_leaves_nothing_even_with_writes_in_flight(tmp_path, monkeypatch):
    """One chunk write fails at once while its siblings are still being written."""
    import errno
    import threading

    from napari_tiled_unet.io import store
    from napari_tiled_unet.io.store import OutputWriteError, write_array

    local = pytest.importorskip("zarr.storage._local")
    if not hasattr(local, "_put"):
        pytest.skip("zarr writes chunks some other way")
    put, wait_for_pending_writes = local._put, store._wait_for_pending_writes
    # The handshake: the first chunk write fails once a sibling is in flight; siblings hold
    # until the error has reached create_output's cleanup, then finish their writes.
    lock = threading.Lock()
    failed, in_flight, cleaning_up = threading.Event(), threading.Event(), threading.Event()
    started, finished = [], []

    def in_flight_or_full(path, value, *args, **kwargs):
        if path.name == "zarr.json":
            return put(path, value, *args, **kwargs)
        with lock:
            first = not failed.is_set()
            failed.set()
        if first:
            in_flight.wait(timeout=30)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        started.append(path)
        in_flight.set()
        cleaning_up.wait(timeout=30)  # still writing when the error reaches create_output
        written = put(path, value, *args, **kwargs)
        finished.append(path)
        return written

    def cleanup_begins(*args, **kwargs):
        cleaning_up.set()
        return wait_for_pending_writes(*args, **kwargs)

    monkeypatch.setattr(local, "_put", in_flight_or_full)
    monkeypatch.setattr(store, "_wait_for_pending_writes", cleanup_begins)
    for name in ("o.zarr", "o.tif"):
        with pytest.raises(OutputWriteError, match=f"cannot write .*{name}: the disk is full") as e:
            write_array(tmp_path / name, np.ones((600, 600), np.uint8))
        assert e.value.errno == errno.ENOSPC
        assert "nothing was written under" in str(e.value)
        # Writes were in flight when the error came, and all had ended before it was raised:
        # none is left to recreate the temporary folder.
        assert started and len(finished) == len(started)
        assert list(tmp_path.iterdir()) == []
        for event in (failed, in_flight, cleaning_up):
            event.clear()
        started.clear()
        finished.clear()
