"""Tile memory: the estimate against a measured peak, default tiles within the budget, halos."""

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from _nets import tiny_unet
from napari_tiled_unet import UNet, predict
from napari_tiled_unet.config import UNetConfig
from napari_tiled_unet.inference import (
    SUGGESTED_KEPT_SHARE,
    forward_whole_image,
    plan_for,
    suggest_halo,
)
from napari_tiled_unet.model.geometry import UNetGeometry
from napari_tiled_unet.model.memory import (
    TILE_MEMORY_BUDGET,
    format_bytes,
    tile_memory,
    voxel_budget,
)
from napari_tiled_unet.tiling.plan import DEFAULT_TILE_EDGE, default_tile_shape

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "tile_memory.py"


@pytest.mark.parametrize(
    ("config", "tile"),
    [
        (UNetConfig(num_classes=3, depth=4, base_channels=16), (1024, 1024)),
        (UNetConfig(depth=2, base_channels=8, ndim=3), (144, 144, 144)),
    ],
)
def test_estimate_bounds_the_measured_peak_closely(config, tile):
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc to reset and read the peak resident memory")
    if not BENCHMARK.exists():
        pytest.skip("benchmarks/ is not part of this installation")
    one = [json.dumps(config.to_dict()), json.dumps(tile)]
    run = subprocess.run(
        [sys.executable, str(BENCHMARK), "--one", *one], capture_output=True, text=True, check=True
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    measured, estimate = result["measured"], result["estimate"]
    assert estimate == tile_memory(config, tile)
    # benchmarks/results/tile_memory.md: 0.69-1.06 over 11 networks and tiles; a forward
    # that kept its skips alive, or an estimate off by half, falls outside.
    assert 0.5 * estimate < measured < 1.15 * estimate, (measured / 2**20, estimate / 2**20)


@pytest.mark.parametrize(
    "config",
    [
        UNetConfig(num_classes=3, depth=4, base_channels=16),  # the bundled model's
        UNetConfig(depth=4, base_channels=64),
        UNetConfig(depth=4, base_channels=16, padding="valid"),
        UNetConfig(depth=2, base_channels=8, ndim=3),
        UNetConfig(depth=3, base_channels=8, ndim=3, anisotropic_levels=1),
    ],
)
def test_default_tile_is_the_largest_within_the_budget(config):
    net = UNet.from_config(config)
    ndim = config.ndim
    tile = default_tile_shape(net.geometry, ndim, voxel_budget(config))
    planned = plan_for((4096, 4096) if ndim == 2 else (256, 512, 512), net).tile_shape
    assert all(p <= t for p, t in zip(planned, tile, strict=True))  # the plan only shrinks it
    assert tile_memory(config, tile) <= TILE_MEMORY_BUDGET
    cap = DEFAULT_TILE_EDGE[ndim] ** ndim
    bigger = [g.nearest_valid_sizes(n + 1)[1] for g, n in zip(net.geometry.axes, tile, strict=True)]
    assert tile_memory(config, bigger) > TILE_MEMORY_BUDGET or math.prod(bigger) > cap


def test_bundled_model_keeps_its_tile_and_wider_networks_get_smaller_ones():
    assert plan_for((8192, 8192), UNet(num_classes=3, base_channels=16)).tile_shape == (1248, 1248)
    assert plan_for((8192, 8192), UNet(base_channels=64)).tile_shape[0] < 800


def test_when_no_exact_tile_fits_the_smallest_is_used_and_a_halo_that_fits_is_suggested():
    net = UNet(base_channels=16, depth=4, ndim=3)
    with pytest.warns(UserWarning, match=r"halo=16 \(--halo 16.*tiles of \(112, 112, 112\)") as w:
        plan = plan_for((300, 300, 300), net)
    assert plan.tile_shape == (240, 240, 240)  # 112 + 112 context, 16 out: the least exact
    [message] = [str(x.message) for x in w if "smallest tile" in str(x.message)]
    assert format_bytes(tile_memory(net.config, plan.tile_shape)) in message
    assert suggest_halo(net) == (16, (112, 112, 112))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = plan_for((300, 300, 300), net, halo=16)
    assert tile_memory(net.config, plan.tile_shape) <= TILE_MEMORY_BUDGET
    kept = math.prod(n - 32 for n in plan.tile_shape) / math.prod(plan.tile_shape)
    assert kept >= SUGGESTED_KEPT_SHARE
    # the next halo up (32) would fit only tiles keeping less
    tile = plan_for((300, 300, 300), net, halo=32).tile_shape
    assert math.prod(n - 64 for n in tile) / math.prod(tile) < SUGGESTED_KEPT_SHARE


def test_halo_is_cut_in_grid_steps_and_valid_networks_refuse_it():
    geometry = UNetGeometry.from_config(UNetConfig(depth=4, ndim=3, anisotropic_levels=2))
    assert geometry.with_halo(None) is geometry and geometry.exact
    assert geometry.with_halo(40).halos == ((32, 32), (48, 48), (48, 48))  # 112 - 4 * 16
    assert geometry.with_halo(27).halos == ((28, 28), (32, 32), (32, 32))  # 32 - 4, 112 - 5 * 16
    assert geometry.with_halo(500).exact and not geometry.with_halo(32).exact
    valid = UNetGeometry.from_config(UNetConfig(depth=2, padding="valid"))
    assert valid.with_halo(100) is valid
    with pytest.raises(ValueError, match="'valid' network trims its own context"):
        valid.with_halo(8)
    assert geometry.with_halo(np.int64(27)) == geometry.with_halo(27)
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="non-negative integer"):
            geometry.with_halo(bad)


def test_tiles_of_a_cut_halo_stay_in_the_whole_images_pooling_phase():
    net = tiny_unet("same", depth=3)
    (before, _), grid = net.geometry.halo, net.geometry.grid
    plan = plan_for((200, 230), net, (64, 64), halo=9)
    assert plan.tiles[1].read_start[1] == plan.stride[1] - 16  # 56 - 5 * 8 = 16 >= 9
    for tile in plan:
        assert all((start + before) % grid == 0 for start in tile.read_start)


def test_predicting_with_a_cut_halo_is_close_to_exact_and_a_full_one_is_exact(rng):
    net = tiny_unet("same", depth=3)
    image = rng.random((150, 170)).astype(np.float32)
    whole = forward_whole_image(image[None], net)
    exact = predict(image, net, tile_shape=(128, 128), output="probabilities", halo=60)
    np.testing.assert_allclose(exact, whole, atol=1e-5)
    errors = [
        np.abs(predict(image, net, tile_shape=(48, 48), output="probabilities", halo=h) - whole)
        for h in (0, 8)  # cut to 0 and 8 (56 - 6 * 8)
    ]
    assert errors[0].max() > 1e-4 and errors[1].max() < errors[0].max() / 10  # more is better


def test_command_line_halo(tmp_path, rng, capsys):
    import tifffile

    from napari_tiled_unet import save_model
    from napari_tiled_unet.cli import main

    image = (rng.random((150, 170)) * 4000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "image.tif", image)
    same = save_model(tiny_unet("same", depth=3), tmp_path / "same.pt")
    args = ["predict", str(tmp_path / "image.tif"), "--tile", "48", "--device", "cpu"]
    out = tmp_path / "labels.tif"
    assert main([*args, "--model", str(same), "--output", str(out), "--halo", "3"]) == 0
    expected = predict(image, same, tile_shape=(48, 48), halo=3)
    np.testing.assert_array_equal(tifffile.imread(out), expected)
    cut, exact = (
        predict(image, same, tile_shape=t, halo=h, output="probabilities")
        for t, h in [((48, 48), 3), ((128, 128), None)]
    )
    assert np.abs(cut - exact).max() > 1e-4  # so the equality above shows the halo was used

    valid = save_model(tiny_unet("valid", depth=2), tmp_path / "valid.pt")
    refused = tmp_path / "refused.tif"
    assert main([*args, "--model", str(valid), "--output", str(refused), "--halo", "3"]) != 0
    assert "'valid' network trims its own context" in capsys.readouterr().err
    assert not refused.exists()


def test_command_line_prints_the_memory_warning_on_one_line(tmp_path, rng, capsys, monkeypatch):
    """The warning rides on the job's first Progress event (``Progress.warning``): the run is
    stopped after that event instead of predicting with 240³ tiles to the end."""
    import tifffile

    import napari_tiled_unet.jobs as jobs
    from napari_tiled_unet import save_model
    from napari_tiled_unet.cli import main

    real_job, first = jobs.iter_predict_job, []

    def first_event_only(*args, **kwargs):
        job = real_job(*args, **kwargs)
        try:
            first.append(next(job))
            yield first[0]
        finally:
            job.close()  # as a cancel does: no output, no temporaries

    monkeypatch.setattr(jobs, "iter_predict_job", first_event_only)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, (rng.random((8, 24, 24)) * 4000).astype(np.uint16))
    model = save_model(UNet(base_channels=1, depth=4, ndim=3), tmp_path / "deep3d.pt")
    argv = ["predict", str(stack), "--model", str(model), "--axes", "ZYX", "--device", "cpu"]
    assert main([*argv, "--output", str(tmp_path / "labels.tif")]) == 0
    assert [e.done for e in first] == [0] and "(240, 240, 240)" in first[0].warning
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep3d.pt", "stack.tif"]
    lines = capsys.readouterr().err.splitlines()
    assert any(
        line.startswith("napari-tiled-unet: warning: the smallest tile (240, 240, 240)")
        and "--halo 48" in line
        for line in lines
    ), lines
