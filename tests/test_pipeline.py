"""The host pipeline: raw tiles staged where they are read, softmax / arg-max on the written
part only, results in their final dtype, reads / compute / writes overlapped with bounded
queues; and the in-memory instance labelling's progress and cancel."""

import threading

import numpy as np
import pytest
import torch

from _helpers import drain
from _nets import tiny_unet
from napari_tiled_unet.forward import (
    forward_whole_image,
    inference_setup,
    labels_dtype,
    predict_batch,
    predict_written,
)
from napari_tiled_unet.inference import iter_predict, predict
from napari_tiled_unet.model.geometry import TileGeometry
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.postprocess import instances_from_classes
from napari_tiled_unet.tiling import stitch
from napari_tiled_unet.tiling.plan import plan_tiles
from napari_tiled_unet.tiling.stitch import iter_run_plan, read_tile


def _before(net, batch, normalization, output):
    """What the per-tile function computed before the pipeline work: numpy normalisation of
    the whole tile, the network, softmax / arg-max over the whole tile."""
    x = normalization.apply(batch, channel_axis=1)
    with torch.inference_mode():
        logits = net(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))
        if output == "labels":
            return logits.argmax(dim=1).numpy().astype(labels_dtype(logits.shape[1]))
        return torch.softmax(logits, dim=1).numpy()


@pytest.mark.parametrize(
    ("dtype", "channels", "normalization"),
    [
        (np.uint16, 1, Normalization("fixed", offset=103.0, scale=2917.5)),
        (np.int16, 2, Normalization("fixed", offset=(-7.0, 11.0), scale=(300.0, 0.37))),
        (np.float32, 1, Normalization("none")),
        (np.float64, 2, Normalization("fixed", offset=0.25, scale=3.0)),
    ],
)
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_written_parts_match_the_whole_tile_computation(dtype, channels, normalization, padding):
    rng = np.random.default_rng(3)
    net = tiny_unet(padding, depth=2, in_channels=channels)
    shape = (70, 90)
    high = 4000 if np.dtype(dtype).kind != "f" else 3
    image = (rng.random((channels, *shape)) * high).astype(dtype)
    g = net.geometry
    edge = g.nearest_valid_sizes(g.context_before + g.context_after + 2 * g.grid)[1]
    plan = plan_tiles(shape, g, (edge, edge))
    tiles = plan.tiles[:3]
    batch = np.stack([read_tile(image, t) for t in tiles])
    device = torch.device("cpu")
    with inference_setup(net, device):
        _compare(net, batch, tiles, normalization, device)


def _compare(net, batch, tiles, normalization, device):
    for output in ("labels", "probabilities"):
        before = _before(net, batch, normalization, output)
        whole = predict_batch(net, batch, tiles, normalization, output, device)
        parts = predict_written(net, batch, tiles, normalization, output, device)
        assert whole.dtype == before.dtype
        np.testing.assert_array_equal(whole, before)
        for tile, part, full in zip(tiles, parts, before, strict=True):
            expected = full[(Ellipsis, *tile.crop)]
            assert part.shape == expected.shape and part.dtype == expected.dtype
            if output == "labels":
                assert part.dtype == np.uint8
                np.testing.assert_array_equal(part, expected)
            else:
                np.testing.assert_allclose(part, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("on_host", [True, False])
def test_arg_max_takes_the_first_of_equal_classes(on_host):
    """Ties (a network with equal logits, e.g. all zero) go to the first class, as
    torch.argmax; a later strictly larger class wins. ``on_host=False`` is the torch path an
    accelerator takes, run here on the CPU."""
    from napari_tiled_unet.forward import finish

    logits = torch.zeros((1, 4, 5, 6))
    logits[0, 2, 1, :] = 1.0
    logits[0, 3, 1, :3] = 1.0  # equal to class 2 there: class 2
    logits[0, 3, 2, :] = 0.5
    [labels] = finish(logits, [(slice(None), slice(None))], "labels", on_host=on_host)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, logits[0].argmax(dim=0).numpy())
    assert labels[0, 0] == 0 and labels[1, 0] == 2 and labels[2, 0] == 3
    random = torch.randn((2, 3, 7, 9))
    crops = [(slice(1, 6), slice(2, 9)), (slice(0, 7), slice(0, 4))]
    for part, crop, full in zip(
        finish(random, crops, "labels", on_host=on_host), crops, random, strict=True
    ):
        np.testing.assert_array_equal(part, full.argmax(dim=0)[crop].numpy())


@pytest.mark.parametrize(
    ("dtype", "normalization"),
    [
        (np.uint16, Normalization("fixed", offset=(103.0, -4.0), scale=(2917.5, 3.0))),
        (np.int16, Normalization("none")),
        (np.float32, Normalization("fixed", offset=0.5, scale=7.0)),
    ],
)
def test_raw_tiles_normalised_where_the_network_runs_give_the_same_result(dtype, normalization):
    """An accelerator gets the raw tiles and normalises them there in torch; run here on the
    CPU, that path gives bit for bit what the host's numpy normalisation gives."""
    from napari_tiled_unet.forward import run_staged, stage_batch

    rng = np.random.default_rng(5)
    net = tiny_unet("same", depth=2, in_channels=2)
    image = (rng.random((2, 40, 40)) * 3000).astype(dtype)
    plan = plan_tiles((40, 40), net.geometry, (64, 64))
    tiles = plan.tiles[:1]
    batch = np.stack([read_tile(image, t) for t in tiles])
    device = torch.device("cpu")
    crops = [t.crop for t in tiles]
    with inference_setup(net, device):
        host = stage_batch(batch, tiles, normalization, device)
        assert isinstance(host, np.ndarray) and host.dtype == np.float32
        for output in ("labels", "probabilities"):
            args = (tiles, normalization, output, device, "image", "float32", crops)
            [expected] = run_staged(net, host, *args)
            [raw] = run_staged(net, torch.from_numpy(batch), *args)
            np.testing.assert_array_equal(raw, expected)


def test_integer_pixels_too_large_once_normalised_are_still_reported(tmp_path):
    """The integer fast path (no per-pixel check when the dtype's range normalises to finite
    values) must not hide real overflow, nor reject small values of a dtype whose extremes
    would overflow."""
    from napari_tiled_unet import save_model

    tiny_scale = {"mode": "fixed", "offset": 0.0, "scale": 1e-35}
    path = save_model(tiny_unet("same", depth=2), tmp_path / "m.pt", normalization=tiny_scale)
    image = np.zeros((64, 64), np.uint16)
    image[5, 5] = 2  # 2e35: finite in float32
    assert predict(image, path, output="probabilities").shape == (3, 64, 64)
    image[7, 7] = 60000  # the uint16 range (65535e35) overflows float32, and so does this
    with pytest.raises(ValueError, match="too large"):
        predict(image, path)


def test_stages_overlap_and_results_may_come_cropped_or_as_callables(rng):
    image = rng.random((1, 75, 61), dtype=np.float32)
    geometry = TileGeometry(grid=4, context_before=4, context_after=4)
    plan = plan_tiles((75, 61), geometry, (24, 24))
    prepared = []

    def prepare(batch, tiles):
        prepared.append(threading.current_thread().name)
        return batch + 1

    def cropped(batch, tiles):  # each tile's written part, finished in the writer thread
        parts = [b[0][t.crop] for b, t in zip(batch, tiles, strict=True)]
        return lambda: parts

    out = np.zeros((75, 61), np.float32)
    run = iter_run_plan(image, plan, cropped, out, batch_size=2, prepare=prepare, cropped=True)
    events, _ = drain(run)
    np.testing.assert_array_equal(out, image[0] + 1)
    assert events[-1] == len(plan)
    assert all(name.startswith("tile-read") for name in prepared)


def test_reads_stay_a_bounded_distance_ahead_and_writes_finish(rng):
    """Memory stays bounded: reads run at most READ_AHEAD batches ahead of the computation;
    every write is done when the generator returns."""
    image = rng.random((1, 96, 96), dtype=np.float32)
    plan = plan_tiles((96, 96), TileGeometry(grid=4, context_before=4, context_after=4), (24, 24))
    started = []
    computed = []
    lock = threading.Lock()

    def prepare(batch, tiles):
        with lock:
            started.append(tiles[0].index)
            assert len(started) - len(computed) <= stitch.READ_AHEAD + 1
        return batch

    def compute(batch, tiles):
        computed.append(tiles[0].index)
        return batch[:, 0]

    out = np.zeros((96, 96), np.float32)
    drain(iter_run_plan(image, plan, compute, out, prepare=prepare))
    np.testing.assert_array_equal(out, image[0])
    assert sorted(started) == computed == list(range(len(plan)))


def test_a_failed_write_stops_the_run_and_a_closed_run_writes_no_more(rng):
    image = rng.random((1, 96, 96), dtype=np.float32)
    plan = plan_tiles((96, 96), TileGeometry(grid=4, context_before=4, context_after=4), (24, 24))

    class Out:
        shape = (96, 96)

        def __init__(self, fail_at=None):
            self.writes, self.fail_at = 0, fail_at

        def __setitem__(self, key, value):
            self.writes += 1
            if self.writes == self.fail_at:
                raise OSError("No space left on device")

    failing = Out(fail_at=3)
    with pytest.raises(OSError, match="No space"):
        drain(iter_run_plan(image, plan, lambda b, t: b[:, 0], failing))
    assert failing.writes < len(plan)

    out = Out()
    run = iter_run_plan(image, plan, lambda b, t: b[:, 0], out)
    next(run), next(run), next(run)
    run.close()
    written = out.writes
    assert written <= 3
    threading.Event().wait(0.2)  # a writer left running would still be writing now
    assert out.writes == written


def test_tiled_labels_are_uint8_and_equal_the_whole_image_arg_max(rng):
    net = tiny_unet("same", depth=2)
    image = (rng.random((90, 110)) * 1000).astype(np.uint16)
    labels = predict(image, net, tile_shape=(64, 64), batch_size=3)
    reference = forward_whole_image(image[None].astype(np.float32), net)
    assert labels.dtype == np.uint8
    assert (labels == reference.argmax(0)).mean() > 0.999


def test_in_memory_instances_show_progress_per_block_and_cancel(monkeypatch):
    """Issue 15 §3: without ``out``, instance labelling yields per block and stops on close."""
    from napari_tiled_unet import instances_blockwise

    net = tiny_unet("same", depth=2)
    rng = np.random.default_rng(0)
    image = rng.random((1100, 70), dtype=np.float32)  # two 1024-row blocks
    events, result = drain(iter_predict(image, net, output="instances", tile_shape=(256, 64)))
    labelling = [e for e in events if e.stage == "instances"]
    assert labelling[0].done == 0 and labelling[-1].done == labelling[-1].total == 8
    assert [e.done for e in labelling] == sorted(e.done for e in labelling)
    classes = predict(image, net, output="labels", tile_shape=(256, 64))
    np.testing.assert_array_equal(result, instances_from_classes(classes))
    assert result.dtype == np.int32

    steps = []
    original = instances_blockwise.iter_instances_blockwise

    def counted(*args, **kwargs):
        for event in original(*args, **kwargs):
            steps.append(event.done)
            yield event

    monkeypatch.setattr(instances_blockwise, "iter_instances_blockwise", counted)
    run = iter_predict(image, net, output="instances", tile_shape=(256, 64))
    event = next(run)
    while event.stage != "instances" or event.done < 2:
        event = next(run)
    run.close()
    assert steps[-1] == 2  # nothing labelled after the cancel
