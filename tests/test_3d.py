"""3D U-Nets: exact overlap-tile prediction, per-axis geometry and anisotropic pooling."""

import numpy as np
import pytest
import torch

from _helpers import drain
from _nets import tiny_unet
from napari_tiled_unet import UNet, load_model, predict, save_model
from napari_tiled_unet.config import UNetConfig
from napari_tiled_unet.inference import forward_whole_image
from napari_tiled_unet.model.geometry import TileGeometry, UNetGeometry
from napari_tiled_unet.postprocess import instances_from_classes
from napari_tiled_unet.tiling.plan import default_tile_shape, plan_tiles
from napari_tiled_unet.tiling.stitch import iter_run_plan

SHAPES = [(19, 22, 17), (9, 13, 11)]  # odd, 3 tiles per axis; smaller than one tile


def tiny_unet3d(padding="same", depth=2, anisotropic_levels=0, num_classes=3, base_channels=2):
    """A small random 3D U-Net: the shared ``tiny_unet`` with ``ndim=3``."""
    return tiny_unet(
        padding,
        depth,
        num_classes,
        base_channels=base_channels,
        ndim=3,
        anisotropic_levels=anisotropic_levels,
    )


def small_tiles(net: UNet, written: int = 8) -> tuple[int, ...]:
    """Per axis, the smallest tile writing at least ``written`` voxels: many tiles per axis."""
    return tuple(
        g.nearest_valid_sizes(g.context_before + g.context_after + max(written, g.grid))[1]
        for g in net.geometry.axes
    )


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("anisotropic_levels", [0, 1])
@pytest.mark.parametrize("shape", SHAPES)
def test_tiled_3d_probabilities_equal_whole_volume_prediction(
    padding, anisotropic_levels, shape, rng
):
    net = tiny_unet3d(padding, anisotropic_levels=anisotropic_levels)
    volume = rng.random(shape, dtype=np.float32) * 3
    reference = forward_whole_image(volume[None], net)
    tile = small_tiles(net)
    if shape == SHAPES[0]:
        assert plan_tiles(shape, net.geometry, tile).stride == (8, 8, 8)  # 3 x 3 x 3 tiles
    else:
        assert len(plan_tiles(shape, net.geometry)) == 1
    for tile_shape in (None, tile):
        tiled = predict(volume, net, output="probabilities", tile_shape=tile_shape, batch_size=2)
        assert tiled.shape == (3, *shape) and tiled.dtype == np.float32
        np.testing.assert_allclose(tiled, reference, atol=1e-5, rtol=0)


def test_deeper_anisotropic_net_is_exact(rng):
    net = tiny_unet3d("same", depth=3, anisotropic_levels=2)
    assert net.geometry.grids == (2, 8, 8)
    volume = rng.random((13, 12, 10), dtype=np.float32)
    tiles = small_tiles(net)
    assert len(plan_tiles(volume.shape, net.geometry, tiles)) == 2 * 2 * 2
    tiled = predict(volume, net, output="probabilities", tile_shape=tiles, batch_size=2)
    np.testing.assert_allclose(tiled, forward_whole_image(volume[None], net), atol=1e-5, rtol=0)


def _run_plan(net: UNet, volume: np.ndarray, plan) -> np.ndarray:
    out = np.zeros((3, *volume.shape[1:]), np.float32)

    def fn(batch, tiles):
        with torch.inference_mode():
            return torch.softmax(net(torch.from_numpy(batch)), 1).numpy()

    drain(iter_run_plan(volume, plan, fn, out, batch_size=2))
    return out


def test_insufficient_3d_halo_is_not_exact(rng):
    """The exactness above is earned by the halo, along Z as along Y and X."""
    net = tiny_unet3d("same", anisotropic_levels=1)
    volume = rng.random((1, 16, 24, 24), dtype=np.float32)
    reference = forward_whole_image(volume, net)
    z, y, x = net.geometry.axes
    no_context = plan_tiles(volume.shape[1:], TileGeometry(grid=4), (8, 16, 16))
    assert np.abs(_run_plan(net, volume, no_context) - reference).max() > 1e-3
    no_z_context = plan_tiles(volume.shape[1:], (TileGeometry(grid=z.grid), y, x), (8, 64, 64))
    assert np.abs(_run_plan(net, volume, no_z_context) - reference).max() > 1e-3


def test_labels_and_instances_on_3d(rng):
    net = tiny_unet3d("same", anisotropic_levels=1)  # 3 classes: background/interior/boundary
    volume = rng.random((12, 20, 18), dtype=np.float32) * 3
    tile = small_tiles(net)
    with torch.no_grad():  # centre each class's logits so that every class wins somewhere
        log_p = np.log(forward_whole_image(volume[None], net)).mean(axis=(1, 2, 3))
        net.out.bias -= torch.from_numpy(log_p)
    reference = forward_whole_image(volume[None], net)
    labels = predict(volume, net, tile_shape=tile, batch_size=2)
    assert labels.shape == volume.shape and labels.dtype == np.uint8
    assert (labels == reference.argmax(0)).mean() > 0.999
    assert set(np.unique(labels)) == {0, 1, 2}
    instances = predict(volume, net, output="instances")  # one tile: labels are exact above
    assert instances.shape == volume.shape and instances.dtype == np.int32
    np.testing.assert_array_equal(instances, instances_from_classes(reference.argmax(0)))
    assert instances.max() > 1
    blockwise = np.zeros(volume.shape, np.int32)
    predict(volume, net, output="instances", out=blockwise)
    np.testing.assert_array_equal(blockwise, instances)


def test_anisotropic_levels_pool_only_in_yx():
    net = tiny_unet3d("same", depth=3, anisotropic_levels=1)
    assert net.downs[0].pool.kernel_size == (1, 2, 2)
    assert net.ups[-1].up.kernel_size == (1, 2, 2)  # ups run deepest level first
    assert net.downs[1].pool.kernel_size == 2 and net.ups[0].up.kernel_size == (2, 2, 2)
    assert net.downs[0].conv.conv_block[0].kernel_size == (3, 3, 3)
    assert net(torch.zeros(1, 1, 4, 8, 16)).shape == (1, 3, 4, 8, 16)
    with pytest.raises(ValueError, match=r"size 5 along axis Z .* use 4 or 8"):
        net(torch.zeros(1, 1, 5, 8, 16))
    with pytest.raises(ValueError, match=r"axis X .* use 8 or 16"):
        net(torch.zeros(1, 1, 4, 8, 12))


def test_per_axis_geometry_of_an_anisotropic_net():
    geometry = UNetGeometry.from_config(UNetConfig(depth=4, ndim=3, anisotropic_levels=2))
    assert geometry.grids == (4, 16, 16)
    assert geometry.halos == ((32, 32), (112, 112), (112, 112))  # fields 31 and 107, on the grid
    assert geometry.receptive_fields == ((31, 31), (107, 107), (107, 107))
    assert [g.pools for g in geometry.axes] == [(False, False, True, True)] + [(True,) * 4] * 2
    assert not geometry.isotropic
    with pytest.raises(ValueError, match=r"differs per axis.*Z: grid 4.*YX: grid 16"):
        geometry.context_before  # noqa: B018
    assert default_tile_shape(geometry, 3) == (112, 400, 400)  # ~256³ voxels, kept share up

    iso = UNetGeometry.from_config(UNetConfig(depth=4, ndim=3))
    assert iso.isotropic and iso.halo == (112, 112) and iso.grid == 16
    assert default_tile_shape(iso, 3) == (256, 256, 256)  # unchanged
    assert default_tile_shape(UNetGeometry.from_config(UNetConfig(depth=4)), 2) == (1280, 1280)

    valid = UNetGeometry.from_config(
        UNetConfig(depth=4, ndim=3, padding="valid", anisotropic_levels=1)
    )
    assert valid.halos == ((48, 48), (92, 92), (92, 92))
    assert valid.min_input_shape == (104, 188, 188)
    assert valid.check_input_shape((104, 188, 572)) == (8, 4, 388)
    with pytest.raises(ValueError, match=r"size 108 along axis Z .* use 104 or 112"):
        valid.check_input_shape((108, 188, 188))


@pytest.mark.parametrize("anisotropic_levels", [0, 1, 2])
def test_valid_3d_output_size_matches_network(anisotropic_levels):
    net = tiny_unet3d("valid", anisotropic_levels=anisotropic_levels)
    z, y, _ = net.geometry.axes
    for size in range(z.min_input_size, z.min_input_size + 2 * z.grid + 1):
        shape = (size, y.min_input_size, y.min_input_size)
        out = z.output_size(size)
        if out is None:
            with pytest.raises(ValueError, match="along axis Z"):
                net(torch.zeros(1, 1, *shape))
        else:
            expected = (out, *(y.output_size(y.min_input_size),) * 2)
            assert net(torch.zeros(1, 1, *shape)).shape[2:] == expected


def measured_halo(net: UNet, axis: int) -> tuple[int, int]:
    """Receptive field (before, after) along ``axis`` found by perturbing single planes.

    As in test_geometry: positive weights (no dead ReLUs) and average pooling (every input
    of a pooling window shows), float64; a plane perturbation anywhere in one grid period, far
    from the borders, over all grid phases.
    """
    net = net.double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    for down in net.downs:
        down.pool = torch.nn.AvgPool3d(down.pool.kernel_size)
    grid, reach = net.geometry.grids[axis], max(net.geometry.halos[axis])
    shape = list(net.geometry.grids)
    shape[axis] = size = -(-(2 * reach + 4 * grid) // grid) * grid  # room on both sides
    x = torch.rand(1, 1, *shape, dtype=torch.float64)
    base = net(x)
    others = tuple(d for d in range(5) if d != axis + 2)
    reach_before = reach_after = 0
    start = size // 2 - grid
    for j in range(start, start + grid):
        y = x.clone()
        y.select(axis + 2, j).add_(1.0)
        affected = torch.nonzero((net(y) - base).abs().amax(dim=others) > 0).flatten()
        # output i depends on input j for i - before <= j <= i + after
        reach_after = max(reach_after, j - int(affected.min()))
        reach_before = max(reach_before, int(affected.max()) - j)
    return reach_before, reach_after


@pytest.mark.parametrize(("depth", "anisotropic_levels"), [(2, 0), (2, 1), (3, 2)])
def test_same_halo_per_axis_is_the_measured_receptive_field(depth, anisotropic_levels):
    net = tiny_unet3d("same", depth=depth, anisotropic_levels=anisotropic_levels)
    fields, halos = net.geometry.receptive_fields, net.geometry.halos
    assert measured_halo(net, axis=0) == fields[0]  # Z
    assert measured_halo(net, axis=2) == fields[2]  # X
    for (field, _), (halo, _), grid in zip(fields, halos, net.geometry.grids, strict=True):
        assert halo % grid == 0 and field <= halo < field + grid  # rounded up to the grid
    if anisotropic_levels:
        assert halos[0] < halos[2]


def test_plan_with_one_geometry_per_axis():
    axes = (
        TileGeometry(grid=2, context_before=5, context_after=3),
        TileGeometry(grid=8, context_before=20, context_after=20),
        TileGeometry(grid=4, context_before=9, context_after=11),
    )
    shape = (23, 50, 41)
    plan = plan_tiles(shape, axes, (20, 64, 32))
    assert plan.stride == (12, 24, 12)
    hits = np.zeros(shape, int)
    for tile in plan:
        hits[tile.write] += 1
        for s, start, g in zip(tile.write, tile.read_start, axes, strict=True):
            assert s.start % g.grid == 0 and s.start - start == g.context_before
    assert (hits == 1).all()
    volume = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    out = np.zeros(shape, np.float32)
    drain(iter_run_plan(volume, plan, lambda batch, tiles: batch[:, 0] + 1, out))
    np.testing.assert_array_equal(out, volume[0] + 1)
    with pytest.raises(ValueError, match="tile size 8 along axis Z leaves no output"):
        plan_tiles(shape, axes, (8, 64, 32))
    with pytest.raises(ValueError, match="one TileGeometry per image axis"):
        plan_tiles(shape, axes[:2], (20, 64, 32))


def test_anisotropic_model_file_round_trip_and_old_files(tmp_path, rng):
    net = tiny_unet3d("valid", anisotropic_levels=1)
    loaded = load_model(save_model(net, tmp_path / "aniso.pt"))
    assert loaded.config == net.config and loaded.config.anisotropic_levels == 1
    assert loaded.downs[0].pool.kernel_size == (1, 2, 2)
    x = torch.from_numpy(rng.random((1, 1, *net.geometry.min_input_shape), dtype=np.float32))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)

    # Files from before the field (and isotropic ones, which leave it out) still load.
    iso = tiny_unet3d("same")
    path = save_model(iso, tmp_path / "iso.pt")
    assert "anisotropic_levels" not in torch.load(path, weights_only=True)["config"]
    assert load_model(path).config == iso.config


def test_anisotropic_levels_validation():
    with pytest.raises(ValueError, match="between 0 and depth"):
        UNetConfig(ndim=3, depth=2, anisotropic_levels=3)
    with pytest.raises(ValueError, match="for 3D networks"):
        UNetConfig(ndim=2, anisotropic_levels=1)
    config = UNetConfig(ndim=3, anisotropic_levels=2)
    assert UNetConfig.from_dict(config.to_dict()) == config


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_3d_float32_on_cuda_is_exact(rng):
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default
    net = tiny_unet3d("same", depth=4, anisotropic_levels=2, base_channels=4)
    volume = rng.random((24, 160, 150), dtype=np.float32) * 3
    reference = forward_whole_image(volume[None], net, device="cpu")
    tiles = (80, 272, 272)
    assert len(plan_tiles(volume.shape, net.geometry, tiles)) == 2 * 4 * 4
    tiled = predict(
        volume, net, output="probabilities", device="cuda", tile_shape=tiles, batch_size=2
    )
    np.testing.assert_allclose(tiled, reference, atol=1e-5, rtol=0)
    assert torch.backends.cudnn.allow_tf32  # put back
