"""Issue 14: several devices on one machine (one worker per device, tiles shared), tested on
the CPU with ``"cpu,cpu"``; and the default batch from the memory estimate."""

import threading

import numpy as np
import pytest
import torch

from _helpers import drain
from _nets import tiny_unet
from napari_tiled_unet.device import resolve_devices
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.inference import iter_predict, predict
from napari_tiled_unet.model.geometry import TileGeometry
from napari_tiled_unet.tiling.plan import plan_tiles
from napari_tiled_unet.tiling.stitch import iter_run_plan


def test_device_lists_resolve_to_one_device_per_worker():
    assert resolve_devices("cpu") == [torch.device("cpu")]
    assert resolve_devices("cpu, cpu") == [torch.device("cpu")] * 2
    assert resolve_devices(["cpu", "cpu", "cpu"]) == [torch.device("cpu")] * 3
    with pytest.raises(UserInputError, match="names no device"):
        resolve_devices(" , ")
    with pytest.raises(UserInputError, match="device must be one of"):
        resolve_devices("cpu,tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_all_without_cuda_is_one_clear_error():
    with pytest.raises(UserInputError, match=r"'cuda:all'.*no CUDA GPU"):
        resolve_devices("cuda:all")
    with pytest.raises(UserInputError, match="no CUDA GPU"):
        predict(np.zeros((64, 64), np.float32), tiny_unet(), device="cuda:all")


def test_workers_share_the_batches_and_write_every_tile(rng):
    image = rng.random((1, 96, 96), dtype=np.float32)
    plan = plan_tiles((96, 96), TileGeometry(grid=4, context_before=4, context_after=4), (24, 24))
    seen = {0: set(), 1: set()}
    both = threading.Barrier(2, timeout=5)

    def worker(k):
        def compute(batch, tiles):
            seen[k].add(threading.current_thread().name)
            if tiles[0].index < 4:  # batches of two tiles
                both.wait()  # the first two batches run at once, one on each worker
            return batch[:, 0]  # the same result from either worker

        return compute

    out = np.zeros((96, 96), np.float32)
    events, _ = drain(iter_run_plan(image, plan, [worker(0), worker(1)], out, batch_size=2))
    np.testing.assert_array_equal(out, image[0])
    assert events[-1] == len(plan) and events == sorted(events)
    assert seen[0] and seen[1] and not seen[0] & seen[1]  # one thread per worker


def test_a_failing_worker_stops_the_run(rng):
    image = rng.random((1, 96, 96), dtype=np.float32)
    plan = plan_tiles((96, 96), TileGeometry(grid=4, context_before=4, context_after=4), (24, 24))

    def broken(batch, tiles):
        raise RuntimeError("device lost")

    out = np.zeros((96, 96), np.float32)
    with pytest.raises(RuntimeError, match="device lost"):
        drain(iter_run_plan(image, plan, [lambda b, t: b[:, 0], broken], out))


@pytest.mark.parametrize("output", ["labels", "probabilities"])
def test_two_cpu_workers_give_the_one_device_result_bit_for_bit(rng, output):
    """The workers run the same per-tile function on the same batches. CPU workers divide
    PyTorch's threads between them, and a CPU convolution's rounding depends on its thread
    count, so the one-device reference runs with the threads each worker gets."""
    net = tiny_unet("same", depth=2)
    image = (rng.random((2, 150, 170)) * 4000).astype(np.uint16)
    options = dict(tile_shape=(64, 64), batch_size=2, output=output, axes="ZYX")
    threads = torch.get_num_threads()
    two = predict(image, net, device="cpu,cpu", **options)
    assert torch.get_num_threads() == threads  # put back after the run
    torch.set_num_threads(max(1, threads // 2))
    try:
        one = predict(image, net, device="cpu", **options)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(two, one)
    assert two.dtype == one.dtype
    assert next(net.parameters()).device.type == "cpu"


def test_three_workers_on_one_thread_each_equal_one_worker(rng):
    net = tiny_unet("same", depth=2, num_classes=4)
    image = (rng.random((130, 150)) * 255).astype(np.uint8)
    options = dict(tile_shape=(64, 64), output="probabilities")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = predict(image, net, device="cpu", **options)
        three = predict(image, net, device=["cpu"] * 3, **options)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(three, one)


def test_several_workers_are_named_in_the_first_progress_message():
    run = iter_predict(np.zeros((64, 64), np.float32), tiny_unet(), device="cpu,cpu")
    first = next(run)
    run.close()
    assert "on 2 devices" in first.message


def test_a_closed_shared_run_writes_no_more(rng):
    image = rng.random((1, 96, 96), dtype=np.float32)
    plan = plan_tiles((96, 96), TileGeometry(grid=4, context_before=4, context_after=4), (24, 24))

    class Out:
        shape = (96, 96)
        writes = 0

        def __setitem__(self, key, value):
            self.writes += 1

    out = Out()
    run = iter_run_plan(image, plan, [lambda b, t: b[:, 0]] * 2, out)
    next(run), next(run)
    run.close()
    written = out.writes
    assert written <= 2 + 2  # the yielded batches and at most one more per worker
    threading.Event().wait(0.2)  # a worker or writer left running would still be writing now
    assert out.writes == written


def test_cli_predicts_with_two_cpu_workers_and_names_a_bad_device(tmp_path, capsys):
    import tifffile

    from napari_tiled_unet.cli import main
    from napari_tiled_unet.model.modelfile import save_model

    model = tmp_path / "model.pt"
    save_model(tiny_unet(), model)
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, (np.random.default_rng(0).random((100, 90)) * 255).astype(np.uint8))
    out = tmp_path / "labels.tif"
    argv = ["predict", str(image), "--model", str(model), "--tile", "64", "-o", str(out)]
    assert main([*argv, "--device", "cpu,cpu"]) == 0
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // 2))
    try:
        expected = predict(tifffile.imread(image), model, tile_shape=(64, 64), device="cpu")
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(tifffile.imread(out), expected)
    capsys.readouterr()
    bad = tmp_path / "bad.tif"
    argv[-1] = str(bad)
    assert main([*argv, "--device", "cpu,gpu"]) == 1
    assert "device must be one of" in capsys.readouterr().err
    assert not bad.exists()


def test_a_request_takes_a_device_list_and_dask_refuses_one():
    pytest.importorskip("dask")
    from napari_tiled_unet.dask_graph import build_graph
    from napari_tiled_unet.distributed import iter_predict_dask
    from napari_tiled_unet.inference import image_layout
    from napari_tiled_unet.jobs import PredictRequest

    assert PredictRequest(device=["cpu", "cpu"]).device == ("cpu", "cpu")
    assert PredictRequest().engine_options(2)["batch_size"] is None  # the engine's default
    net = tiny_unet()
    image = np.zeros((64, 64), np.float32)
    layout = image_layout(image, net)
    with pytest.raises(UserInputError, match="one device per worker"):
        build_graph(image, net, layout, output="labels", device="cuda:0,cuda:1")
    with pytest.raises(UserInputError, match="one device per worker"):
        drain(iter_predict_dask(image, net, device=["cpu", "cpu"]))


def test_the_default_batch_fits_half_the_free_gpu_memory_and_is_1_elsewhere():
    from napari_tiled_unet.model.memory import MAX_DEFAULT_BATCH, default_batch

    gib = 2**30
    assert default_batch("cpu", 660 * 2**20, 100 * gib) == 1
    assert default_batch("mps", 660 * 2**20, 100 * gib) == 1
    assert default_batch("cuda", 660 * 2**20, None) == 1  # free memory unknown
    assert default_batch("cuda", 1 * gib, 7 * gib) == 3  # 3.5 GiB for 1 GiB tiles
    assert default_batch("cuda", 1 * gib, 1 * gib) == 1  # never below one tile
    assert default_batch("cuda", 660 * 2**20, 140 * gib) == MAX_DEFAULT_BATCH


def test_the_engine_resolves_the_default_batch_from_the_plan_and_the_devices(monkeypatch):
    """batch_size None reaches default_batch with the plan's per-tile estimate; on the CPU it
    is 1 (what the batches of the tile loop show)."""
    import napari_tiled_unet.device_workers as workers
    from napari_tiled_unet.model.memory import tile_memory
    from napari_tiled_unet.tiling import stitch

    calls, sizes = [], []
    real_batch, real_run = workers.default_batch, stitch.iter_run_plan

    def spy_batch(kind, per_tile, free):
        calls.append((kind, per_tile, free))
        return real_batch(kind, per_tile, free)

    def spy_run(*args, batch_size=1, **kwargs):
        sizes.append(batch_size)
        return real_run(*args, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(workers, "default_batch", spy_batch)
    monkeypatch.setattr("napari_tiled_unet.inference.iter_run_plan", spy_run)
    net = tiny_unet()
    predict(np.zeros((100, 100), np.float32), net, tile_shape=(64, 64), device="cpu")
    assert calls == [("cpu", tile_memory(net.config, (64, 64)), None)]
    assert sizes == [1]
    predict(np.zeros((100, 100), np.float32), net, tile_shape=(64, 64), batch_size=3)
    assert len(calls) == 1 and sizes == [1, 3]  # a given batch is used as it is


def test_upload_ahead_copies_in_the_reader_and_waits_for_the_copy_before_computing(monkeypatch):
    """The CUDA upload stream's control flow, with stand-ins for the CUDA calls (no GPU in
    the tests): a staged tensor is copied under the upload stream and an event recorded;
    the computation waits on that event and then gets the copied tensor; a batch
    normalised on the host (an ndarray) passes through as it is."""
    from napari_tiled_unet.device_workers import upload_ahead

    log = []

    class Stream:
        def wait_event(self, event):
            log.append(("wait", event.name))

    class Event:
        count = 0

        def __init__(self):
            Event.count += 1
            self.name = f"event{Event.count}"

        def record(self, stream):
            log.append(("record", self.name))

    class StreamContext:
        def __init__(self, stream):
            pass

        def __enter__(self):
            log.append("upload stream on")

        def __exit__(self, *exc):
            log.append("upload stream off")

    current = Stream()
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: Stream())
    monkeypatch.setattr(torch.cuda, "stream", StreamContext)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: current)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, s: log.append("record_stream"))

    def prepare(batch, tiles):
        return batch if batch.dtype == np.float64 else torch.from_numpy(batch)

    def compute(staged, tiles):
        log.append(("compute", type(staged).__name__))
        return staged

    upload, run = upload_ahead(prepare, compute, torch.device("cpu"))
    staged = upload(np.arange(4, dtype=np.uint16), None)
    assert log == ["upload stream on", ("record", "event1"), "upload stream off"]
    result = run(staged, None)
    assert log[3:] == [("wait", "event1"), "record_stream", ("compute", "Tensor")]
    np.testing.assert_array_equal(result.numpy(), np.arange(4))
    log.clear()
    host = np.ones(3)
    assert run(upload(host, None), None) is host and log == [("compute", "ndarray")]
