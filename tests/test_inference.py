import numpy as np
import pytest
import tifffile
import torch

from _helpers import drain
from _nets import tiny_unet
from napari_tiled_unet import Progress, iter_predict, predict, save_model
from napari_tiled_unet.inference import forward_whole_image
from napari_tiled_unet.model.geometry import TileGeometry
from napari_tiled_unet.tiling.plan import plan_tiles
from napari_tiled_unet.tiling.stitch import iter_run_plan

# Not a multiple of any tile (slow: ~12 s over its 4 cases on 2 cores); smaller than one tile.
SHAPES = [pytest.param((301, 517), marks=pytest.mark.slow), (37, 21)]


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("depth", [2, 4])
@pytest.mark.parametrize("shape", SHAPES)
def test_tiled_probabilities_equal_whole_image_prediction(padding, depth, shape, rng):
    net = tiny_unet(padding, depth=depth)
    image = rng.random(shape, dtype=np.float32) * 3
    g = net.geometry
    small = g.nearest_valid_sizes(g.context_before + g.context_after + 2 * g.grid)[1]
    reference = forward_whole_image(image[None], net)
    for tile in (None, (small, small)):
        tiled = predict(image, net, output="probabilities", tile_shape=tile, batch_size=2)
        assert tiled.shape == (3, *shape) and tiled.dtype == np.float32
        np.testing.assert_allclose(tiled, reference, atol=1e-5, rtol=0)
    labels = predict(image, net, tile_shape=(small, small))
    assert labels.dtype == np.uint8
    # argmax of (nearly) equal probabilities; ties at float round-off are vanishingly rare
    assert (labels == reference.argmax(0)).mean() > 0.999


def test_insufficient_halo_is_not_exact(rng):
    """The exactness above is earned by the halo: a zero-context plan of the same net is off."""
    net = tiny_unet("same", depth=3)
    image = rng.random((1, 120, 120), dtype=np.float32)
    plan = plan_tiles((120, 120), TileGeometry(grid=8), (40, 40))
    out = np.zeros((3, 120, 120), np.float32)

    def fn(batch, tiles):
        with torch.inference_mode():
            return torch.softmax(net(torch.from_numpy(batch)), 1).numpy()

    drain(iter_run_plan(image, plan, fn, out))
    assert np.abs(out - forward_whole_image(image, net)).max() > 1e-3


def test_progress_events_are_exact_and_generator_returns_result(rng):
    net = tiny_unet("same", depth=2)
    image = rng.random((200, 200), dtype=np.float32)
    events, result = drain(iter_predict(image, net, tile_shape=(64, 64), batch_size=3))
    assert all(isinstance(e, Progress) for e in events)
    total = events[0].total
    assert events[0].done == 0 and events[-1].done == total == len(events[1:]) * 3 - (-total % 3)
    assert [e.done for e in events] == sorted(e.done for e in events)
    assert result.shape == (200, 200)


def test_closing_the_generator_stops_and_restores_the_model(rng):
    net = tiny_unet("same", depth=2).train()
    gen = iter_predict(rng.random((300, 300), dtype=np.float32), net, tile_shape=(64, 64))
    next(gen), next(gen)
    gen.close()
    assert net.training


def test_lazy_and_memmapped_inputs_and_outputs(rng, tmp_path):
    import dask.array as da
    import zarr

    net = tiny_unet("valid", depth=2)
    image = rng.random((150, 170), dtype=np.float32)
    expected = predict(image, net, output="probabilities", tile_shape=(60, 60))
    tifffile.imwrite(tmp_path / "img.tif", image)
    mm = tifffile.memmap(tmp_path / "img.tif")
    lazy = da.from_array(image, chunks=(50, 50))
    out = zarr.zeros(
        (3, 150, 170), chunks=(3, 64, 64), dtype="f4", store=str(tmp_path / "out.zarr")
    )
    for source in (mm, lazy):
        got = predict(source, net, output="probabilities", tile_shape=(60, 60), out=out)
        assert got is out
        np.testing.assert_array_equal(out[:], expected)


def test_model_file_normalization_is_applied(rng, tmp_path):
    net = tiny_unet("same", depth=2)
    image = (rng.random((64, 80)) * 1000 + 100).astype(np.uint16)
    bare = predict(image, net, output="probabilities")
    np.testing.assert_allclose(
        bare, forward_whole_image(image[None].astype(np.float32), net), atol=1e-5
    )
    path = save_model(
        net, tmp_path / "m.pt", normalization={"mode": "fixed", "offset": 100.0, "scale": 1000.0}
    )
    normalized = (image.astype(np.float32) - 100) / 1000
    np.testing.assert_allclose(
        predict(image, path, output="probabilities"),
        forward_whole_image(normalized[None], net),
        atol=1e-5,
    )


def test_multichannel_model_takes_channel_first_images(rng):
    net = tiny_unet("same", depth=2, in_channels=2)
    image = rng.random((2, 50, 60), dtype=np.float32)
    np.testing.assert_allclose(
        predict(image, net, output="probabilities"), forward_whole_image(image, net), atol=1e-5
    )
    with pytest.raises(ValueError, match=r"3 channels|2 channels"):
        predict(rng.random((3, 50, 60), dtype=np.float32), net)


@pytest.mark.parametrize(
    ("shape", "axes", "match"),
    [
        ((64, 64, 3), None, r"layer 'cells' has shape \(64, 64, 3\).*RGB"),
        ((5, 64, 64), "CYX", r"layer 'cells'.*axes CYX.*2D single-channel.*YX.*5 channels"),
    ],
)
def test_wrong_dimensionality_is_explained(shape, axes, match):
    with pytest.raises(ValueError, match=match):
        predict(np.zeros(shape, np.float32), tiny_unet(), axes=axes, name="layer 'cells'")


def test_nan_is_reported_with_its_location(rng):
    image = rng.random((100, 100), dtype=np.float32)
    image[70, 20] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        predict(image, tiny_unet(), tile_shape=(64, 64))


def test_bad_arguments(rng, tmp_path):
    net = tiny_unet()
    image = rng.random((40, 40), dtype=np.float32)
    with pytest.raises(ValueError, match="output must be one of"):
        predict(image, net, output="masks")
    with pytest.raises(ValueError, match="out has shape"):
        predict(image, net, out=np.zeros((3, 3), np.uint8))
    with pytest.raises(
        ValueError, match="size 50 along axis Y does not suit this network; use 48 or 52"
    ):
        predict(image, net, tile_shape=(50, 64))
    with pytest.raises(ValueError, match="dtype complex"):
        predict(image.astype(np.complex64), net)
    with pytest.raises(FileNotFoundError):
        predict(image, tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="model must be"):
        predict(image, 42)
    with pytest.raises(ValueError, match="device must be one of"):
        predict(image, net, device="tpu")


def test_channels_last_run_leaves_the_model_as_it_was(rng):
    net = tiny_unet("same", depth=2)
    predict(rng.random((100, 100), dtype=np.float32), net, tile_shape=(64, 64))
    assert all(p.is_contiguous() for p in net.parameters())


def test_bfloat16_changes_few_labels_and_float16_needs_a_gpu(rng):
    net = tiny_unet("same", depth=2)
    image = rng.random((128, 128), dtype=np.float32)
    exact = predict(image, net, output="probabilities", tile_shape=(64, 64))
    fast = predict(image, net, output="probabilities", tile_shape=(64, 64), precision="bfloat16")
    assert 0 < np.abs(fast - exact).max() < 0.05  # bfloat16 keeps 8 bits of mantissa
    with pytest.raises(ValueError, match=r"float16.*needs a GPU"):
        predict(image, net, precision="float16", device="cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        predict(image, net, precision="half")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_float32_on_cuda_is_exact_despite_tf32_defaults(rng):
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default
    net = tiny_unet("same", depth=4)
    image = rng.random((700, 900), dtype=np.float32) * 3
    reference = forward_whole_image(image[None], net, device="cpu")
    tiled = predict(image, net, output="probabilities", device="cuda", tile_shape=(256, 256))
    np.testing.assert_allclose(tiled, reference, atol=1e-5, rtol=0)
    assert torch.backends.cudnn.allow_tf32  # put back
