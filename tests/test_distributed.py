"""The dask path runs the same plan and per-tile function as the local loop: same result."""

import dataclasses
import time

import numpy as np
import pytest
import tifffile
import torch
import zarr

from _helpers import drain
from _nets import tiny_unet
from napari_tiled_unet import predict, save_model
from napari_tiled_unet.normalization import Normalization

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

CASES = [("same", (96, 96)), ("valid", (92, 92))]


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def image(rng):
    return (rng.random((150, 170)) * 4000).astype(np.uint16)


@pytest.mark.parametrize(("padding", "tile"), CASES)
def test_local_cluster_equals_local_prediction(client, image, padding, tile):
    from napari_tiled_unet.distributed import iter_store, predict_dask

    net = tiny_unet(padding)
    net.info = net.info.replace(normalization=Normalization("percentile", low=1.0, high=99.8))
    labels = predict_dask(image, net, tile_shape=tile, device="cpu", client=client)
    assert labels.numblocks[0] > 1 and labels.numblocks[1] > 1  # several tiles per axis
    expected = predict(image, net, tile_shape=tile, device="cpu")
    np.testing.assert_array_equal(labels.compute(), expected)

    probs = predict_dask(
        image, net, tile_shape=tile, output="probabilities", device="cpu", client=client
    )
    expected = predict(image, net, tile_shape=tile, output="probabilities", device="cpu")
    # Worker processes run torch on one thread: equal up to float rounding.
    np.testing.assert_allclose(probs.compute(), expected, rtol=1e-5, atol=1e-6)
    out = np.zeros(probs.shape, probs.dtype)
    events, _ = drain(iter_store(probs, out, client))
    assert events[-1].done == events[-1].total == np.prod(probs.numblocks)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("padding", "tile"), CASES)
def test_threaded_scheduler_equals_local_prediction(image, padding, tile):
    from napari_tiled_unet.distributed import iter_store, predict_dask

    net = tiny_unet(padding, in_channels=2)
    two = np.stack([image, image[::-1]])
    lazy = da.from_array(two, chunks=(1, 64, 64))  # a dask input is read box by box
    for output in ("labels", "probabilities"):
        result = predict_dask(lazy, net, tile_shape=tile, output=output, device="cpu", batch_size=2)
        expected = predict(two, net, tile_shape=tile, output=output, device="cpu", batch_size=2)
        assert result.dtype == expected.dtype
        # dask's local threaded scheduler, even while the module's Client is the default.
        with dask.config.set(scheduler="threads"):
            np.testing.assert_array_equal(result.compute(), expected)
            out = np.zeros(result.shape, result.dtype)
            drain(iter_store(result, out))
        np.testing.assert_array_equal(out, expected)


def test_stored_channel_selection_is_applied_as_by_predict(image):
    from napari_tiled_unet.distributed import predict_dask

    net = tiny_unet("same", in_channels=2)
    net.info = net.info.replace(channels=(2, 0), source_channels=3)
    three = np.stack([image, image[::-1], image[:, ::-1]])
    result = predict_dask(three, net, tile_shape=(96, 96), output="probabilities", device="cpu")
    expected = predict(three, net, tile_shape=(96, 96), output="probabilities", channels=[2, 0])
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(result.compute(), expected)
    with pytest.raises(ValueError, match=r"trained on channels \[2, 0\] of 3-channel images"):
        predict_dask(np.concatenate([three, three[:1]]), net, device="cpu")


def test_frames_of_a_stack_on_an_in_process_cluster_equal_predict(rng, tmp_path):
    """A TZCYX stack: one graph per frame, normalised once over the whole stack, assembled in
    the image's axis order; labels, probabilities and instances equal the local engine's."""
    distributed = pytest.importorskip("distributed")
    import zarr

    from napari_tiled_unet.distributed import iter_predict_dask, iter_store, predict_dask

    net = tiny_unet("same", in_channels=2)
    net.info = net.info.replace(normalization=Normalization("percentile", low=1.0, high=99.8))
    # Frames of different brightness: normalising each frame on its own would change labels.
    brightness = np.arange(1, 7, dtype=np.float32).reshape(2, 3, 1, 1, 1)
    stack = (rng.random((2, 3, 2, 32, 40)) * 1000 * brightness).astype(np.float32)
    options = dict(axes="TZCYX", tile_shape=(64, 64), device="cpu")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        for output in ("labels", "probabilities"):
            lazy = predict_dask(stack, net, output=output, client=client, **options)
            expected = predict(stack, net, output=output, **options)
            assert (lazy.shape, lazy.dtype) == (expected.shape, expected.dtype)
            assert lazy.numblocks[-2] > 1 and lazy.numblocks[-1] > 1  # several tiles a frame
            out = np.zeros(lazy.shape, lazy.dtype)
            drain(iter_store(lazy, out, client))
            np.testing.assert_array_equal(out, expected)

        torch.manual_seed(2)  # a random network that finds many objects in this stack
        net = tiny_unet("same", in_channels=2)  # no normalisation: a varied class map
        expected = predict(stack, net, output="instances", **options)
        assert (expected.reshape(6, -1).max(axis=1) > 10).all()
        objects = zarr.create_array(
            store=str(tmp_path / "objects.zarr"), shape=expected.shape, dtype=np.int32
        )
        job = iter_predict_dask(
            stack, net, objects, output="instances", client=client, scratch_dir=tmp_path, **options
        )
        events, result = drain(job)
    assert result is objects
    np.testing.assert_array_equal(objects[...], expected)
    stages = [e.stage for e in events]
    assert stages[0] == "predict" and stages[-1] == "instances"
    last_predict = [e for e in events if e.stage == "predict"][-1]
    assert last_predict.done == last_predict.total == 2 * 3 * 6  # frames x tiles
    assert events[-1].done == events[-1].total
    assert [p.name for p in tmp_path.iterdir()] == ["objects.zarr"]  # the scratch is gone


def test_errors_match_predict(image):
    from napari_tiled_unet.distributed import predict_dask

    with pytest.raises(ValueError, match="model expects"):
        predict_dask(image, tiny_unet(in_channels=2), device="cpu")
    with pytest.raises(ValueError, match="output must be"):
        predict_dask(image, tiny_unet(), output="instances")


def _write_tiff(path, image, kind):
    """``kind`` "memmap": uncompressed and contiguous (tifffile.memmap reads it); "tiled-zlib":
    compressed tiles, read through tifffile's zarr store (an open file: not picklable)."""
    if kind == "memmap":
        tifffile.imwrite(path, image)
    else:
        tifffile.imwrite(path, image, tile=(64, 64), compression="zlib")
    from napari_tiled_unet.io.tiff import open_tiff

    assert isinstance(open_tiff(path), np.memmap) == (kind == "memmap")


@pytest.mark.parametrize("kind", ["memmap", "tiled-zlib"])
def test_tiff_job_on_a_process_cluster_equals_local(client, tmp_path, image, kind):
    """Issue 16: the job layer's dask path on a TIFF file, through worker processes. The tiles
    are read here and sent with the tasks, so an open TIFF never has to be pickled (it failed
    with "Could not serialize object of type _HLGExprSequence") and the workers need not see
    the file; the percentile normalisation is read from the file here, as the local path does."""
    from napari_tiled_unet.distributed import iter_predict_dask
    from napari_tiled_unet.inference import plan_for
    from napari_tiled_unet.io.tiff import open_tiff
    from napari_tiled_unet.jobs import PredictRequest, predict_job

    _write_tiff(tmp_path / "image.tif", image, kind)
    net = tiny_unet("same")
    with torch.no_grad():  # logits ten times wider, so probabilities clearly vary (std ~1e-2)
        net.out.weight.mul_(10)
    net.info = net.info.replace(normalization=Normalization("percentile", low=1.0, high=99.8))
    model = save_model(net, tmp_path / "model.pt")
    request = PredictRequest(model=model, output="labels", tile=96, batch_size=2, device="cpu")
    source = tmp_path / "image.tif"
    local = predict_job(source, request, output_path=tmp_path / "local.tif")
    expected = tifffile.imread(local.path)
    result = predict_job(source, request, output_path=tmp_path / "dask.tif", client=client)
    np.testing.assert_array_equal(tifffile.imread(result.path), expected)
    probabilities = dataclasses.replace(request, output="probabilities")
    local = predict_job(source, probabilities, output_path=tmp_path / "local.zarr")
    remote = predict_job(source, probabilities, output_path=tmp_path / "dask.zarr", client=client)
    local, remote = (zarr.open_array(str(r.path), mode="r")[...] for r in (local, remote))
    assert local[0].std() > 1e-3  # varies over the image: tiles out of place would show
    # Worker processes run torch on one thread: equal up to float rounding.
    np.testing.assert_allclose(remote, local, rtol=1e-5, atol=1e-6)
    # Without client=, on the active scheduler: the module's Client (the default one).
    events, labels = drain(iter_predict_dask(open_tiff(tmp_path / "image.tif"), model, **_CPU))
    np.testing.assert_array_equal(labels, expected)
    assert events[-1].done == events[-1].total == len(plan_for(image.shape, net, (96, 96)))


_CPU = dict(tile_shape=(96, 96), batch_size=2, device="cpu")


def test_lazy_graph_refuses_an_image_workers_cannot_receive(client, tmp_path, image):
    from napari_tiled_unet.distributed import predict_dask
    from napari_tiled_unet.io.tiff import open_tiff

    _write_tiff(tmp_path / "image.tif", image, "tiled-zlib")
    with pytest.raises(ValueError, match=r"cannot be sent to dask workers .* iter_predict_dask"):
        predict_dask(open_tiff(tmp_path / "image.tif"), tiny_unet(), client=client, **_CPU)


def test_closing_a_cluster_job_cancels_its_tasks(client, rng):
    """At most two batches per worker thread are in flight; closing the generator (Cancel)
    cancels them and drops the scattered tiles and weights."""
    from napari_tiled_unet.distributed import iter_predict_dask

    big = rng.random((4, 300, 300)).astype(np.float32)  # 4 planes of 49 tiles
    job = iter_predict_dask(big, tiny_unet(), client=client, tile_shape=(96, 96), device="cpu")
    first = next(job)
    assert first.total == 4 * 49
    assert first.done == 0
    assert next(job).done == 1
    in_flight = 2 * sum(client.nthreads().values())
    assert 1 < len(client.futures) <= 1 + 2 * in_flight  # the weights; tasks and their tiles
    job.close()
    deadline = time.monotonic() + 10
    while client.futures and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.futures


@pytest.mark.slow
def test_cli_dask_scheduler_local(tmp_path, image):
    """``--dask-scheduler local`` (worker processes) on a tiled, compressed TIFF."""
    from napari_tiled_unet.cli import main

    model = save_model(tiny_unet("same"), tmp_path / "model.pt")
    _write_tiff(tmp_path / "image.tif", image, "tiled-zlib")
    out, probs = tmp_path / "labels.tif", tmp_path / "probs.zarr"
    argv = ["predict", str(tmp_path / "image.tif"), "--model", str(model), "--tile", "96"]
    argv += ["--device", "cpu", "--dask-scheduler", "local"]
    assert main([*argv, "--output", str(out)]) == 0
    expected = predict(image, model, tile_shape=(96, 96))
    np.testing.assert_array_equal(tifffile.imread(out), expected)
    assert main([*argv, "--output", str(tmp_path / "l2.tif"), "--probabilities", str(probs)]) == 0
    import zarr

    p = predict(image, model, tile_shape=(96, 96), output="probabilities")
    np.testing.assert_allclose(zarr.open_array(probs, mode="r")[...], p, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "l2.tif"), expected)


def test_dask_job_instances_are_labelled_block_by_block(client, tmp_path, image):
    import zarr

    from napari_tiled_unet import load_model
    from napari_tiled_unet.jobs import PredictRequest, predict_job

    path = save_model(tiny_unet("same"), tmp_path / "inst.pt", label_mode="instance")
    model = load_model(path)
    tifffile.imwrite(tmp_path / "image.tif", image)
    out = tmp_path / "objects.zarr"
    request = PredictRequest(model=path, tile=96, device="cpu")  # auto: instances
    result = predict_job(tmp_path / "image.tif", request, output_path=out, client=client)
    assert result.output == "instances" and result.path == out
    expected = predict(image, model, tile_shape=(96, 96), device="cpu", output="instances")
    assert expected.max() > 10
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[...], expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tif", "inst.pt", "objects.zarr"]
