"""Hostile inputs fail fast, in one line that names the file (issue 16, section 2).

Small generated files: TIFFs written with tifffile whose header bytes are then patched, and
model files whose payload is edited before ``torch.save``.
"""

import importlib.util
import io
import os
import struct
import threading
import time
import tracemalloc

import numpy as np
import pytest
import tifffile
import torch

from _nets import tiny_unet
from napari_tiled_unet import load_model, save_model
from napari_tiled_unet.config import MAX_PARAMETERS, NetworkSpec, UNetConfig, parameter_count
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.io import tiff
from napari_tiled_unet.io.tiff import open_tiff
from napari_tiled_unet.model.geometry import TileGeometry
from napari_tiled_unet.model.info import ModelInfo, ModelInfoError
from napari_tiled_unet.model.unet import UNet
from napari_tiled_unet.tiling.plan import plan_tiles

LAYOUTS = {
    "strips": {"rowsperstrip": 16},
    "zlib-strips": {"compression": "zlib", "rowsperstrip": 32},
    "zlib-tiles": {"compression": "zlib", "tile": (32, 32)},
    "bigtiff-tiles": {"bigtiff": True, "tile": (48, 48)},
}


def write_tiff(path, layout="strips", shape=(96, 112)):
    """A uint16 TIFF (21 KB at the default shape) in one of :data:`LAYOUTS`."""
    image = np.random.default_rng(0).integers(0, 4000, shape, dtype=np.uint16)
    tifffile.imwrite(path, image, **LAYOUTS[layout])
    return image


def patch_tag(path, name, value, index=0):
    """Overwrite entry ``index`` of the first page's tag ``name`` in the file's bytes."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags[name]
        code = tif.byteorder + {3: "H", 4: "I", 16: "Q"}[int(tag.dtype)]
        offset = tag.valueoffset + index * struct.calcsize(code)
    data = bytearray(path.read_bytes())
    struct.pack_into(code, data, offset, value)
    path.write_bytes(bytes(data))


def fails_in_one_line(call, path, match=None):
    """``call()`` raises one UserInputError: one line, naming ``path``; returns its text."""
    with pytest.raises(UserInputError, match=match) as info:
        call()
    text = str(info.value)
    assert "\n" not in text and str(path) in text, text
    return text


# --- TIFF headers -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_header_claiming_4e9_rows_fails_in_well_under_5_s(tmp_path, layout):
    path = tmp_path / "rows.tif"
    write_tiff(path, layout)
    patch_tag(path, "ImageLength", 2**32 - 1)
    tracemalloc.start()
    start = time.perf_counter()
    fails_in_one_line(lambda: open_tiff(path), path, "4294967295.*times the file size")
    assert time.perf_counter() - start < 5
    assert tracemalloc.get_traced_memory()[1] < 50 * 2**20
    tracemalloc.stop()


def test_a_bigtiff_of_empty_tiles_claiming_200000_squared_is_refused(tmp_path):
    path = tmp_path / "sparse.tif"
    n, tile = 196 * 196, 1024  # 200000 px in 1024 px tiles, all with offset and count 0
    tags = [(256, 200000), (257, 200000), (258, 8), (259, 1), (262, 1), (277, 1)]
    tags += [(322, tile), (323, tile)]
    entries = [struct.pack("<HHQQ", code, 16 if code < 258 else 3, 1, v) for code, v in tags]
    arrays = 16 + 8 + 20 * (len(tags) + 2) + 8
    entries += [struct.pack("<HHQQ", 324 + k, 16, n, arrays + k * 8 * n) for k in range(2)]
    header = b"II" + struct.pack("<HHHQ", 43, 8, 0, 16) + struct.pack("<Q", len(entries))
    path.write_bytes(header + b"".join(entries) + bytes(8) + bytes(16 * n))
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].shape == (200000, 200000)  # what it claims
    fails_in_one_line(lambda: open_tiff(path), path, r"37\.3 GiB.*times the file size")


def test_a_decompression_bomb_strip_is_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(tiff, "MAX_SEGMENT_BYTES", 2**20)
    path = tmp_path / "bomb.tif"
    tifffile.imwrite(path, np.zeros((1024, 4096), np.uint8), compression="zlib", rowsperstrip=1024)
    assert path.stat().st_size < 10_000  # 4 MiB of pixels in one strip
    tracemalloc.start()
    fails_in_one_line(lambda: open_tiff(path), path, r"strip decodes to 4\.0 MiB.*tile=")
    assert tracemalloc.get_traced_memory()[1] < 2**20  # the strip was never inflated
    tracemalloc.stop()
    tifffile.imwrite(path, np.zeros((1024, 4096), np.uint8), compression="zlib", tile=(256, 256))
    assert open_tiff(path)[:].sum() == 0  # the same pixels in tiles are fine


@pytest.mark.parametrize(
    ("layout", "tag"),
    [
        ("strips", "ImageWidth"),
        ("strips", "ImageLength"),
        ("zlib-strips", "RowsPerStrip"),
        ("zlib-strips", "SamplesPerPixel"),
        ("zlib-tiles", "TileWidth"),
        ("zlib-tiles", "TileLength"),
        ("bigtiff-tiles", "SamplesPerPixel"),
    ],
)
def test_zero_sizes_in_a_header_are_one_error_not_a_zero_division(tmp_path, layout, tag):
    path = tmp_path / "zero.tif"
    write_tiff(path, layout)
    patch_tag(path, tag, 0)
    fails_in_one_line(lambda: open_tiff(path), path)


def test_an_uncompressed_contiguous_image_needs_no_rows_per_strip(tmp_path):
    path = tmp_path / "plain.tif"
    image = write_tiff(path, "strips")
    patch_tag(path, "RowsPerStrip", 0)  # the memory map does not use it
    np.testing.assert_array_equal(open_tiff(path), image)


@pytest.mark.parametrize("size", [0, 1, 2, 4, 7, 8, 12, 16])
def test_files_of_a_few_bytes_are_one_error(tmp_path, size):
    path = tmp_path / "tiny.tif"
    write_tiff(path)
    path.write_bytes(path.read_bytes()[:size])
    fails_in_one_line(lambda: open_tiff(path), path, "not a readable TIFF")


def test_strips_missing_from_the_header_are_one_error(tmp_path):
    path = tmp_path / "rows.tif"
    write_tiff(path, "zlib-strips")
    patch_tag(path, "ImageLength", 200)  # 7 strips of 32 rows, the file lists 3
    fails_in_one_line(lambda: open_tiff(path), path, r"lists 3 strip\(s\) where .* needs 7")


@pytest.mark.parametrize("layout", ["strips", "zlib-tiles"])
def test_packed_12_bit_integers_say_that_imagecodecs_is_needed(tmp_path, layout):
    if importlib.util.find_spec("imagecodecs") is not None:
        pytest.skip("imagecodecs is installed: packed integers decode")
    path = tmp_path / "packed.tif"
    write_tiff(path, layout)
    patch_tag(path, "BitsPerSample", 12)
    fails_in_one_line(lambda: open_tiff(path), path, r"imagecodecs.*pip install imagecodecs")


def test_a_corrupt_strip_read_later_is_one_error_naming_the_file(tmp_path):
    path = tmp_path / "corrupt.tif"
    image = write_tiff(path, "zlib-strips")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[1]
    data = bytearray(path.read_bytes())
    data[offset + 4 : offset + 40] = bytes(36)
    path.write_bytes(bytes(data))
    lazy = open_tiff(path)  # the first strip decodes
    np.testing.assert_array_equal(lazy[:32], image[:32])
    fails_in_one_line(lambda: lazy[40:50], path, r"cannot be decoded \(zlib\.error")


def test_a_fifo_a_folder_and_a_symlink_loop_are_refused_without_blocking(tmp_path):
    fifo, folder, loop = tmp_path / "fifo.tif", tmp_path / "folder.tif", tmp_path / "loop.tif"
    os.mkfifo(fifo)
    folder.mkdir()
    loop.symlink_to(loop.name)
    outcome = {}

    def open_fifo():
        try:
            open_tiff(fifo)
        except UserInputError as err:
            outcome["error"] = str(err)

    thread = threading.Thread(target=open_fifo, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "opening a FIFO blocked"
    assert "not a regular file" in outcome["error"] and str(fifo) in outcome["error"]
    fails_in_one_line(lambda: open_tiff(folder), folder, "is a folder")
    fails_in_one_line(lambda: open_tiff(loop), loop, "symbolic links")


# --- tile plans ----------------------------------------------------------------------------


def test_a_plan_for_4e9_rows_is_made_at_once_and_lazily():
    geometry = UNet(1, 2, depth=4, base_channels=4).geometry
    start = time.perf_counter()
    tracemalloc.start()
    plan = plan_tiles((2**32 - 1, 112), geometry)
    assert time.perf_counter() - start < 1
    assert tracemalloc.get_traced_memory()[1] < 2**20
    tracemalloc.stop()
    rows = -(-(2**32 - 1) // plan.stride[0])
    assert len(plan) == rows  # one tile across 112 px, exact
    last = plan[-1]
    assert last.index == rows - 1 and last.write[0].stop == 2**32 - 1


def test_lazy_tiles_index_slice_and_iterate_alike():
    geometry = TileGeometry(grid=4, context_before=3, context_after=3)
    plan = plan_tiles((37, 50, 61), geometry, (16, 24, 20))
    assert len(plan) > 100
    tiles = list(plan)
    assert len(tiles) == len(plan) and [t.index for t in tiles] == list(range(len(plan)))
    assert plan.tiles[2:7] == tuple(tiles[2:7]) and plan[-1] == tiles[-1]
    covered = np.zeros((37, 50, 61), int)
    for tile in tiles:
        covered[tile.write] += 1
    assert (covered == 1).all()  # C order, every pixel written once
    with pytest.raises(IndexError):
        plan[len(plan)]


# --- the napari reader ------------------------------------------------------------------------


def test_the_reader_claims_only_regular_files_that_start_like_a_tiff(tmp_path):
    from napari_tiled_unet._napari.reader import get_reader, read_tiff

    fifo = tmp_path / "fifo.tif"
    os.mkfifo(fifo)
    (tmp_path / "folder.tif").mkdir()
    (tmp_path / "notes.tif").write_text("not an image")
    write_tiff(tmp_path / "real.TIF")
    for name in ("fifo.tif", "folder.tif", "notes.tif", "missing.tif"):
        assert get_reader(str(tmp_path / name)) is None, name
    assert get_reader(str(tmp_path / "real.TIF")) is read_tiff


def test_the_reader_reports_a_broken_file_it_claimed_in_one_line(tmp_path):
    from napari_tiled_unet._napari.reader import get_reader

    path = tmp_path / "broken.tif"
    write_tiff(path, "zlib-tiles")
    patch_tag(path, "ImageLength", 2**32 - 1)
    reader = get_reader(str(path))
    fails_in_one_line(lambda: reader(str(path)), path, "times the file size")


def test_the_reader_refuses_a_plane_that_would_not_fit_in_memory(tmp_path, monkeypatch):
    from napari_tiled_unet._napari import reader

    path = tmp_path / "tiled.tif"
    write_tiff(path, "zlib-tiles")
    monkeypatch.setattr(reader, "_memory_bytes", lambda: 10_000)  # a plane is 21 KB
    fails_in_one_line(lambda: reader.read_tiff(str(path)), path, "decodes a whole plane")


# --- network sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"in_channels": 3, "num_classes": 5, "depth": 2, "base_channels": 4},
        {"ndim": 3, "depth": 3, "base_channels": 8, "anisotropic_levels": 2},
        {"padding": "valid", "depth": 1, "base_channels": 7},
    ],
)
def test_parameter_count_matches_the_network(config):
    net = UNet(**config)
    assert net.config.parameter_count == sum(p.numel() for p in net.parameters())


def test_a_network_too_large_to_build_is_refused_with_its_size():
    with pytest.raises(UserInputError, match=r"3\.03e\+12 parameters: 11 TiB.*at most 363"):
        UNetConfig(base_channels=20000)
    with pytest.raises(UserInputError, match=r"NetworkSpec: .*parameters"):
        NetworkSpec(base_channels=20000)
    with pytest.raises(UserInputError, match="fewer input channels or classes"):
        UNetConfig(num_classes=10**9)
    assert parameter_count(1, 2, 4, 363) <= MAX_PARAMETERS < parameter_count(1, 2, 4, 364)


def test_training_with_base_channels_20000_is_refused_before_training(tmp_path, capsys):
    from napari_tiled_unet.cli import main

    write_tiff(tmp_path / "a.tif")
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((96, 112), np.uint8))
    args = ["train", "--image", str(tmp_path / "a.tif"), "--labels", str(tmp_path / "b.tif")]
    args += ["-o", str(tmp_path / "m.pt")]
    assert main([*args, "--base-channels", "20000"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "parameters" in err and "TiB" in err, err


# --- model files ----------------------------------------------------------------------------


def edited_model(tmp_path, edit, name="m.pt"):
    """A tiny model file whose payload ``edit(payload)`` changed before it was saved."""
    path = save_model(tiny_unet(), tmp_path / name)
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    return path


def test_a_model_file_claiming_base_channels_20000_is_refused_before_building(tmp_path):
    path = edited_model(tmp_path, lambda p: p["config"].update(base_channels=20000))
    assert path.stat().st_size < 100_000
    start = time.perf_counter()
    fails_in_one_line(lambda: load_model(path), path, "parameters.*TiB")
    assert time.perf_counter() - start < 2


def test_weights_that_do_not_fit_a_large_config_are_refused_before_building(tmp_path):
    # 487 million parameters (1.8 GiB) fit the bound; the file holds a few thousand.
    path = edited_model(tmp_path, lambda p: p["config"].update(base_channels=256, depth=4))
    start = time.perf_counter()
    text = fails_in_one_line(lambda: load_model(path), path, "do not fit the network")
    assert time.perf_counter() - start < 2
    assert "misshapen" in text and "and " in text and "more" in text  # summarised


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, value):
    def poison(payload):
        for tensor in payload["state_dict"].values():
            tensor.fill_(value)

    path = edited_model(tmp_path, poison)
    fails_in_one_line(lambda: load_model(path), path, "NaN or infinite weights")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda p: p.update(format_version="1"), "format_version is '1'"),
        (lambda p: p.update(format_version=None), "format_version is None"),
        (lambda p: p.update(config=[1, 2]), "no config dict"),
        (lambda p: p.update(metadata=[1]), "metadata is a list"),
        (lambda p: p.update(state_dict=[1]), "not a dict of named tensors"),
        (lambda p: p["state_dict"].clear(), r"\d+ missing \(.* and \d+ more\)"),
        (lambda p: p["state_dict"].update(extra=torch.ones(3)), r"1 unexpected \(extra\)"),
        (lambda p: p["config"].update(depth="4"), "depth must be a positive integer"),
    ],
)
def test_damaged_model_files_are_one_error_naming_the_file(tmp_path, edit, match):
    path = edited_model(tmp_path, edit)
    fails_in_one_line(lambda: load_model(path), path, match)


def test_save_model_stores_numpy_metadata_as_plain_data(tmp_path):
    path = save_model(
        tiny_unet(),
        tmp_path / "m.pt",
        tile_shape=np.array([64, 64]),
        training={"seed": np.int64(3), "loss": np.float32(0.5), "curve": np.arange(3)},
        note=np.str_("numpy text"),
    )
    info = load_model(path).info  # loads with weights_only=True
    assert info.tile_shape == (64, 64) and info.extra == {"note": "numpy text"}
    assert info.training == {"seed": 3, "loss": 0.5, "curve": [0, 1, 2]}
    assert type(info.training["seed"]) is int


def test_save_model_refuses_objects_before_writing(tmp_path):
    path = tmp_path / "m.pt"
    save_model(tiny_unet(), path, note="old")
    before = path.read_bytes()
    with pytest.raises(ModelInfoError, match=r"metadata\['training'\]\['rng'\] is a numpy"):
        save_model(tiny_unet(), path, training={"rng": np.random.default_rng()})
    with pytest.raises(ModelInfoError, match=r"metadata\['when'\] .*set"):
        save_model(tiny_unet(), path, when={1, 2})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.pt"]
    with pytest.raises(ModelInfoError, match="training"):
        ModelInfo(training={"f": print})


def test_a_pickled_call_in_a_model_file_is_refused_naming_what(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    buffer = io.BytesIO()
    torch.save({"format": Evil()}, buffer)
    path = tmp_path / "evil.pt"
    path.write_bytes(buffer.getvalue())
    fails_in_one_line(lambda: load_model(path), path, "refused without running them.*system")
    assert not (tmp_path / "pwned").exists()
