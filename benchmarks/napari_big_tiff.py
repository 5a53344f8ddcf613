"""A multi-gigabyte TIFF in a real napari viewer: open, predict, cancel, scroll the lazy result.

The issue's acceptance criterion: "a person can open a multi-gigabyte TIFF in napari, predict,
and scroll the lazy Labels result without the viewer freezing". This script does exactly that
in one process, with a real viewer (no mocks; under ``xvfb-run`` on a machine without a
display), and measures it:

1. makes (or reuses) a uint16 TIFF of about ``--gib`` GiB with the streaming writer of
   ``benchmarks/predict_memory.py`` (the bundled nuclei image mirror-tiled; contiguous strips by
   default, ``--layout tiled`` for zlib-compressed 512 px tiles);
2. opens it with ``viewer.open(path, plugin="napari-tiled-unet")``, checks that the layer's data
   is lazy (a ``numpy.memmap`` or ``zarr.Array``, not an in-memory array), and records the time
   to open, the time of the first draw and the process's resident memory (RSS) after them;
3. docks the Predict widget, picks the layer and a model, clicks Run, waits ``--cancel-after``
   seconds and clicks Cancel: the worker must stop within seconds and leave no layer and no
   result store (the widget's ``result-N.zarr`` or its temporary folder) behind. Then it clicks
   Run again and lets the prediction finish. While the worker runs, a ``QTimer`` ticking every
   20 ms on the GUI thread records the gaps between its ticks: their maximum and 99th
   percentile are the "freeze" metric (a responsive viewer stays under ~100-200 ms). Also
   recorded: the progress updates the widget saw, wall time and Mpx/s, and how long the GUI
   thread spent handing the result over (the widget's ``_add_result``, i.e. napari adding the
   Labels layer, plus the next draw);
4. checks the result layer: Labels, backed by a zarr array, of the image's shape, with the
   image's ``scale`` and ``translate``. Then it "scrolls": moves the camera to ``--steps``
   positions across the image (a snake through a grid) at a zoom showing about ``--view``
   x ``--view`` image pixels, each step processing events until the canvas has drawn, and
   times each step (median, max); and saves one screenshot (``--screenshot``) where the
   labels cover a visible share of the view;
5. prints a markdown report: machine, command line, image, RSS after opening / peak while
   predicting / after scrolling (sampled every 50 ms from ``/proc/self/status``, split into
   RssAnon = heap and RssFile = mapped files such as a memory-mapped TIFF, whose clean pages
   the kernel drops when memory is short), ``VmHWM``, the timings, and a list of checks. The
   exit code is 1 if a check failed (a GUI gap above ``--freeze-ms`` counts as one).

The bundled model predicts ~0.3 Mpx/s on a 2-core CPU: hours for gigapixels. By default the
widget therefore gets a tiny network (``UNet(1, 2, depth=1, base_channels=2)``; ~10 Mpx/s for
the network alone, 3-4 Mpx/s end to end into the zarr store on 2 shared cores), saved to a
temporary model file with percentile normalisation. Its weights are set by hand to a 3 x 3
mean filter and a threshold, so its labels outline the nuclei (IoU ~0.85 with the sample's
labels); the engine, the widget, the worker and the zarr store are the same as
with any model. ``--model PATH`` uses a real model file, ``--model default`` the bundled one.
The report says which was used.

Under ``xvfb-run`` OpenGL is Mesa's software renderer (llvmpipe, named in the report): textures
live in the process's memory, so they count in its RSS, and every draw costs CPU time; with a
GPU, textures go to GPU memory and draws are cheaper.

Not a test: it prints numbers. Inputs made by the script are deleted at the end unless
``--keep`` is given (an input that was already there is reused and left alone).

Usage::

    xvfb-run -a python benchmarks/napari_big_tiff.py                    # 2 GiB, contiguous
    xvfb-run -a python benchmarks/napari_big_tiff.py --gib 0.15         # a quick trial
    xvfb-run -a python benchmarks/napari_big_tiff.py --gib 4 --layout tiled --keep
    xvfb-run -a python benchmarks/napari_big_tiff.py --model my_model.pt --tile 1024
    xvfb-run -a python benchmarks/napari_big_tiff.py --gib 0.05 --lazy-result-pixels 0
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gui_stall import GapRecorder  # the benchmarks beside this one
from predict_memory import machine, make_input

MIB = 2**20
TINY = dict(depth=1, base_channels=2)
THRESHOLD = 0.1  # on the percentile-normalised, 3 x 3-smoothed intensity (nuclei ~ above)


# -- memory --------------------------------------------------------------------------------


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process in bytes (psutil's rss without /proc)."""
    fields: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    fields[key] = int(value.split()[0]) * 1024
    except OSError:
        import psutil

        fields["VmRSS"] = psutil.Process().memory_info().rss
    return fields


class MemorySampler(threading.Thread):
    """Samples this process's RSS every ``interval`` seconds; keeps the peak of each phase."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.phase = "start"
        self.peaks: dict[str, dict[str, int]] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def sample(self) -> dict[str, int]:
        fields = proc_status()
        peak = self.peaks.setdefault(self.phase, {})
        if fields.get("VmRSS", 0) >= peak.get("VmRSS", 0):
            self.peaks[self.phase] = fields
        return fields

    def enter(self, phase: str) -> None:
        """Start a new phase (its peak starts from the current sample)."""
        self.sample()
        self.phase = phase
        self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) used so far by the GUI (main) thread and by the process."""
    import psutil

    process = psutil.Process()
    main_id = threading.main_thread().native_id
    gui = sum(t.user_time + t.system_time for t in process.threads() if t.id == main_id)
    total = process.cpu_times()
    return gui, total.user + total.system


def mib(fields: dict[str, int], key: str = "VmRSS") -> str:
    return f"{fields[key] / MIB:.0f}" if key in fields else "?"


def rss_cell(fields: dict[str, int]) -> str:
    """``RSS (anon + file) MiB`` for the report."""
    return f"{mib(fields)} ({mib(fields, 'RssAnon')} anon + {mib(fields, 'RssFile')} file)"


# -- the model -----------------------------------------------------------------------------


def tiny_threshold_model(path: Path) -> Path:
    """Save a tiny U-Net whose hand-set weights smooth (3 x 3 mean) and threshold the input.

    Every weight is 0 except one path: encoder conv 1 = mean filter into channel 0, encoder
    conv 2 = identity on it, the decoder's first conv takes that skip channel (the upsampled
    bottleneck, all zeros, is ignored), its second conv is the identity, and the 1 x 1 output
    conv gives class 1 the logit ``x - THRESHOLD`` and class 0 the logit 0.
    """
    import torch

    from napari_tiled_unet import Normalization, UNet, save_model

    net = UNet(in_channels=1, num_classes=2, **TINY)
    params = dict(net.named_parameters())
    with torch.no_grad():
        for p in params.values():
            p.zero_()
        params["downs.0.conv.conv_block.0.weight"][0, 0] = 1 / 9
        params["downs.0.conv.conv_block.2.weight"][0, 0, 1, 1] = 1
        last = f"ups.{TINY['depth'] - 1}.conv.conv_block"
        up_channels = net.ups[-1].up.out_channels  # torch.cat((upsampled, skip)): skip comes after
        params[f"{last}.0.weight"][0, up_channels, 1, 1] = 1
        params[f"{last}.2.weight"][0, 0, 1, 1] = 1
        params["out.weight"][1, 0, 0, 0] = 1
        params["out.bias"][1] = -THRESHOLD
    return save_model(net, path, normalization=Normalization().to_dict())


# -- the GUI thread ------------------------------------------------------------------------


def gap_summary(gaps: np.ndarray, limit_ms: float) -> str:
    if gaps.size == 0:
        return "no ticks"
    return (
        f"max {gaps.max():.0f} ms, p99 {np.percentile(gaps, 99):.0f} ms, "
        f"median {np.median(gaps):.0f} ms, {int((gaps > limit_ms).sum())} of {gaps.size} "
        f"above {limit_ms:g} ms"
    )


def wait_until(condition: Callable[[], bool], timeout: float, poll_ms: int = 10) -> bool:
    """Run the Qt event loop (as napari's own would run) until ``condition()`` or ``timeout``."""
    from qtpy.QtCore import QEventLoop, QTimer

    if condition():
        return True
    deadline = time.perf_counter() + timeout
    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(poll_ms)
    timer.timeout.connect(lambda: (condition() or time.perf_counter() > deadline) and loop.quit())
    timer.start()
    loop.exec_()
    timer.stop()
    return condition()


class DrawCounter:
    """Counts the draws of the viewer's vispy canvas, to be sure a step was rendered."""

    def __init__(self, viewer: Any) -> None:
        self.canvas = viewer.window._qt_viewer.canvas
        self.draws = 0
        self.canvas._scene_canvas.events.draw.connect(self._drawn)

    def _drawn(self, _event: Any) -> None:
        self.draws += 1

    def draw(self, timeout: float = 120.0) -> bool:
        """Ask for a repaint and run the event loop until the canvas has drawn."""
        before = self.draws
        self.canvas.native.update()
        return wait_until(lambda: self.draws > before, timeout, poll_ms=1)


# -- checks and helpers --------------------------------------------------------------------


def is_lazy(data: Any) -> bool:
    """A numpy.memmap or zarr array (every level of a multiscale list), not an in-memory array."""
    import zarr

    if type(data).__name__ == "MultiScaleData":  # napari's wrapper of a multiscale layer's levels
        data = list(data)
    if isinstance(data, list | tuple):
        return all(is_lazy(level) for level in data)
    return isinstance(data, np.memmap | zarr.Array)


def kind_of(data: Any) -> str:
    if type(data).__name__ == "MultiScaleData":
        data = list(data)
    if isinstance(data, list | tuple):
        return f"multiscale [{', '.join(kind_of(d) for d in data)}]"
    return f"{type(data).__module__}.{type(data).__qualname__}"


def listing(folder: Path | None) -> list[str]:
    """Names in ``folder`` (sorted), [] if it is None or gone."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(os.listdir(folder))


def scroll_positions(shape: tuple[int, int], view: int, steps: int) -> list[tuple[float, float]]:
    """About ``steps`` camera centres, a snake through a grid covering the image."""
    height, width = shape
    cols = max(1, round(np.sqrt(steps * width / height)))
    rows = max(1, int(np.ceil(steps / cols)))
    ys = np.linspace(view / 2, max(view / 2, height - view / 2), rows)
    xs = np.linspace(view / 2, max(view / 2, width - view / 2), cols)
    centres = []
    for i, y in enumerate(ys):
        for x in xs if i % 2 == 0 else xs[::-1]:
            centres.append((float(y), float(x)))
    return centres[:steps]


def foreground_share(labels: Any, centre: tuple[float, float], view: int) -> float:
    """Share of non-zero labels in a 64-strided sample of the ``view``-sized window at ``centre``."""
    y0, x0 = (max(0, int(c - view / 2)) for c in centre)
    window = np.asarray(labels[y0 : y0 + view : 64, x0 : x0 + view : 64])
    return float(np.count_nonzero(window)) / max(1, window.size)


# -- the run -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/napari_big_tiff.py", *argv])
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--gib", type=float, default=2.0, help="image size (uint16)")
    parser.add_argument("--layout", choices=("contiguous", "tiled"), default="contiguous")
    parser.add_argument("--compression", choices=("zlib", "zstd"), default="zlib")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "napari-tiled-unet-predict-memory",
        help="where the TIFF is made (shared with predict_memory.py, so its inputs are reused)",
    )
    parser.add_argument("--keep", action="store_true", help="keep an input made by this run")
    parser.add_argument(
        "--model",
        default=None,
        help="a model file, or 'default' for the bundled model; default: a tiny fast network",
    )
    parser.add_argument("--tile", type=int, default=0, help="widget 'tile size' (0 = automatic)")
    parser.add_argument("--batch", type=int, default=1, help="widget 'batch size'")
    parser.add_argument("--device", default="cpu", help="widget 'device'")
    parser.add_argument(
        "--lazy-result-pixels",
        type=int,
        default=None,
        help="the widget's threshold for a zarr-backed result (default: the widget's own)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--cancel-after", type=float, default=3.0, help="seconds; 0: no cancel")
    parser.add_argument("--timeout", type=float, default=3600.0, help="for one prediction (s)")
    parser.add_argument("--steps", type=int, default=20, help="camera positions to scroll to")
    parser.add_argument("--view", type=int, default=1000, help="image pixels across the view")
    parser.add_argument("--freeze-ms", type=float, default=200.0, help="largest acceptable gap")
    parser.add_argument(
        "--open-s", type=float, default=2.0, help="longest acceptable open + first draw (s)"
    )
    parser.add_argument("--tick-ms", type=int, default=20, help="GUI timer period")
    parser.add_argument("--screenshot", type=Path, default=Path("/tmp/napari_big_tiff.png"))
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    show_warning = warnings.showwarning
    sampler = MemorySampler()
    sampler.start()
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str = "") -> bool:
        checks.append((name, bool(ok), detail))
        print(f"  [{'ok' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}", flush=True)
        return ok

    path, shape, made = make_input(args.workdir, args.gib, args.layout, args.compression)
    pixels = shape[0] * shape[1]
    tmp = tempfile.TemporaryDirectory(prefix="napari-big-tiff-")
    try:
        if args.model is None:
            model = tiny_threshold_model(Path(tmp.name) / "tiny_threshold.pt")
            model_text = (
                f"tiny hand-set network `UNet(1, 2, depth={TINY['depth']}, "
                f"base_channels={TINY['base_channels']})` (3x3 mean + threshold {THRESHOLD}), "
                f"saved to a temporary model file"
            )
        elif args.model == "default":
            model, model_text = None, "the bundled default model"
        else:
            model, model_text = Path(args.model), f"model file `{args.model}`"
        return run(args, command, path, shape, pixels, model, model_text, sampler, check, checks)
    finally:
        warnings.showwarning = show_warning  # run() records warnings while the viewer is up
        sampler.stop()
        tmp.cleanup()
        if made and not args.keep:
            path.unlink(missing_ok=True)


def run(
    args: argparse.Namespace,
    command: str,
    path: Path,
    shape: tuple[int, int],
    pixels: int,
    model: Path | None,
    model_text: str,
    sampler: MemorySampler,
    check: Callable[..., bool],
    checks: list[tuple[str, bool, str]],
) -> int:
    import napari
    from napari.utils.notifications import NotificationSeverity, notification_manager
    from qtpy.QtWidgets import QApplication

    from napari_tiled_unet._napari.predict_widget import DEFAULT_MODEL, PredictWidget

    report: dict[str, Any] = {"notices": []}

    def notice(notification: Any) -> None:
        if notification.severity >= NotificationSeverity.WARNING:
            text = f"{notification.severity}: {notification.message}"
            if text not in report["notices"]:
                report["notices"].append(text)

    notification_manager.notification_ready.connect(notice)
    show_warning = warnings.showwarning

    def record_warning(message: Any, category: Any, *rest: Any, **kw: Any) -> None:
        text = f"{category.__name__}: {message}"
        if text not in report["notices"]:
            report["notices"].append(text)
        show_warning(message, category, *rest, **kw)

    warnings.showwarning = record_warning  # Python warnings not routed to notifications

    # -- the viewer and the image ----------------------------------------------------------
    sampler.enter("viewer")
    viewer = napari.Viewer(title="napari_big_tiff", show=True)
    viewer.window._qt_window.resize(1400, 1000)
    draws = DrawCounter(viewer)
    QApplication.processEvents()
    draws.draw()
    report["gl"] = gl_renderer()
    report["rss_viewer"] = sampler.sample()

    print(f"opening {path}", flush=True)
    sampler.enter("open")
    start = time.perf_counter()
    layers = viewer.open(str(path), plugin="napari-tiled-unet")
    report["open_s"] = time.perf_counter() - start
    start = time.perf_counter()
    draws.draw()
    report["first_draw_s"] = time.perf_counter() - start
    report["rss_open"] = sampler.sample()
    image = layers[0]
    check(
        "the image layer's data is lazy",
        is_lazy(image.data),
        f"{kind_of(image.data)}, shape {tuple(image.data.shape)}",
    )
    print(
        f"  open {report['open_s']:.2f} s, first draw {report['first_draw_s']:.2f} s, "
        f"RSS {rss_cell(report['rss_open'])} MiB",
        flush=True,
    )

    # -- the Predict widget ---------------------------------------------------------------
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    widget.reset_choices()
    widget.image.value = image
    if model is None:
        widget.model.value = DEFAULT_MODEL
    else:
        widget.model_file.value = model  # selects "model file"
    widget.device.value = args.device
    widget.tile_size.value = args.tile
    widget.batch_size.value = args.batch
    if args.lazy_result_pixels is not None:
        widget.lazy_result_pixels = args.lazy_result_pixels
    lazy_expected = pixels >= widget.lazy_result_pixels
    events: list[tuple[float, Any]] = []
    show_progress = widget._show_progress  # what the worker's progress signal calls

    def seen(event: Any) -> None:
        events.append((time.perf_counter(), event))
        show_progress(event)

    widget._show_progress = seen
    handover: dict[str, float] = {}
    add_result = widget._add_result

    def timed_add_result(*a: Any) -> None:
        handover["start"] = time.perf_counter()
        add_result(*a)
        handover["end"] = time.perf_counter()

    widget._add_result = timed_add_result
    draws.draw()
    gaps = GapRecorder(args.tick_ms)

    # -- Cancel once ----------------------------------------------------------------------
    if args.cancel_after > 0:
        print(f"run, cancel after {args.cancel_after:g} s", flush=True)
        sampler.enter("cancel run")
        n_layers = len(viewer.layers)
        gaps.start()
        widget.run_button.native.click()
        check("Run starts a worker", widget.running)
        store_dir = Path(widget._store_dir.name) if widget._store_dir else None
        wait_until(lambda: not widget.running, args.cancel_after)
        during = listing(store_dir)
        done_before = max((e.done for _, e in events), default=0)
        still_running = widget.running
        start = time.perf_counter()
        widget.cancel_button.native.click()
        stopped = wait_until(lambda: not widget.running, 60.0)
        report["cancel_s"] = time.perf_counter() - start
        gaps.stop()
        report["gaps_cancel"] = gaps.gaps_ms()
        check(
            "Cancel stops the worker within 5 s",
            still_running and stopped and report["cancel_s"] < 5,
            f"{report['cancel_s']:.2f} s after {done_before} tiles"
            + ("" if still_running else " (the run had already finished: cancel not tested)"),
        )
        check("nothing is added after Cancel", len(viewer.layers) == n_layers)
        after = listing(store_dir)
        if lazy_expected:
            check(
                "no result store is left after Cancel",
                store_dir is not None and after == [],
                f"{store_dir} held {during or 'nothing'} while running, {after or 'nothing'} after",
            )
        check(
            "the widget says it cancelled and can run again",
            "Cancelled" in widget.status.value and widget.run_button.enabled,
            repr(widget.status.value),
        )
        events.clear()

    # -- Predict to the end ------------------------------------------------------------------
    print("run to completion", flush=True)
    sampler.enter("predict")
    handover.clear()
    gaps.start()
    cpu_before = cpu_seconds()
    start = time.perf_counter()
    widget.run_button.native.click()
    finished = wait_until(lambda: not widget.running, args.timeout)
    end = time.perf_counter()
    draws.draw()
    after_draw = time.perf_counter()
    gaps.stop()
    cpu_after = cpu_seconds()
    report["cpu_gui_s"] = cpu_after[0] - cpu_before[0]
    report["cpu_all_s"] = cpu_after[1] - cpu_before[1]
    report["rss_predict_peak"] = sampler.peaks.get("predict", {})
    sampler.enter("result")
    report["predict_s"] = end - start
    report["progress_events"] = len(events)
    tiles = [e for _, e in events if e.stage == "predict"]
    report["tiles"] = tiles[-1].total if tiles else 0
    report["status"] = widget.status.value
    check(
        "the prediction finished", finished, f"{report['predict_s']:.1f} s; {widget.status.value}"
    )
    result_start = handover.get("start", end)
    report["gaps_predict"] = gaps.gaps_ms(end=result_start)
    report["gaps_all"] = gaps.gaps_ms()
    report["handover_s"] = handover.get("end", end) - handover.get("start", end)
    report["handover_draw_s"] = after_draw - end
    report["engine_s"] = result_start - start  # Run click to the result handed to the GUI
    print(
        f"  {report['predict_s']:.1f} s, {pixels / 1e6 / report['predict_s']:.2f} Mpx/s, "
        f"{report['progress_events']} progress updates; GUI gaps while predicting: "
        f"{gap_summary(report['gaps_predict'], args.freeze_ms)}; result hand-over "
        f"{report['handover_s']:.2f} s + draw {report['handover_draw_s']:.2f} s",
        flush=True,
    )

    # -- The result layer -------------------------------------------------------------------
    result = viewer.layers[-1] if finished and len(viewer.layers) > 1 else None
    ok = result is not None and type(result).__name__ == "Labels"
    check("the result is a Labels layer", ok, result.name if result is not None else "none")
    if not ok:
        return finish(args, command, path, shape, model_text, report, sampler, checks, viewer)

    data = result.data
    check(
        "the result is lazy (zarr-backed)" if lazy_expected else "the result is in memory",
        is_lazy(data) if lazy_expected else isinstance(data, np.ndarray),
        f"{kind_of(data)}"
        + (
            ""
            if lazy_expected
            else f" (image below lazy_result_pixels = {widget.lazy_result_pixels})"
        ),
    )
    check("the result's shape is the image's", tuple(data.shape) == shape, str(tuple(data.shape)))
    check(
        "the result's scale and translate are the image's",
        np.allclose(result.scale, image.scale) and np.allclose(result.translate, image.translate),
        f"scale {[float(v) for v in result.scale]}, "
        f"translate {[float(v) for v in result.translate]}",
    )
    report["result_kind"] = kind_of(data)
    start = time.perf_counter()
    level0 = data[0] if type(data).__name__ == "MultiScaleData" else data
    np.asarray(level0[...])  # one full read of the result, to compare with the hand-over
    report["full_read_s"] = time.perf_counter() - start

    # -- Scroll -------------------------------------------------------------------------------
    print("scroll", flush=True)
    sampler.enter("scroll")
    canvas = viewer.window._qt_viewer.canvas.native
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari >= 0.9
    zoom = min(canvas.width(), canvas.height()) / args.view
    report["canvas"] = (canvas.width(), canvas.height())
    start = time.perf_counter()
    viewer.reset_view()
    draws.draw()
    report["overview_s"] = time.perf_counter() - start
    centres = scroll_positions(shape, args.view, args.steps)
    steps = []
    for centre in centres:
        start = time.perf_counter()
        camera.center = centre
        camera.zoom = zoom
        drawn = draws.draw()
        steps.append(time.perf_counter() - start)
        if not drawn:
            check("every scroll step is drawn", False, f"no draw at {centre}")
            break
    report["scroll_s"] = np.asarray(steps)
    report["steps"] = len(steps)
    report["rss_scroll"] = sampler.sample()
    print(
        f"  {len(steps)} steps: median {np.median(steps) * 1000:.0f} ms, "
        f"max {max(steps) * 1000:.0f} ms",
        flush=True,
    )

    # -- A screenshot where labels are visible ------------------------------------------------
    shares = [foreground_share(level0, c, args.view) for c in centres]
    best = int(np.argmin([abs(s - 0.3) for s in shares]))
    camera.center = centres[best]
    camera.zoom = zoom
    draws.draw()
    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
    try:
        viewer.screenshot(path=str(args.screenshot), canvas_only=False, flash=False)
    except Exception:  # a full-window grab can fail on some platforms; the canvas is enough
        viewer.screenshot(path=str(args.screenshot), canvas_only=True, flash=False)
    report["screenshot"] = (args.screenshot, centres[best], shares[best])
    return finish(args, command, path, shape, model_text, report, sampler, checks, viewer)


def finish(
    args: argparse.Namespace,
    command: str,
    path: Path,
    shape: tuple[int, int],
    model_text: str,
    report: dict[str, Any],
    sampler: MemorySampler,
    checks: list[tuple[str, bool, str]],
    viewer: Any,
) -> int:
    """Close the viewer, judge the GUI gaps, print the report; return the exit code."""
    pixels = shape[0] * shape[1]
    if "open_s" in report:
        blocked = report["open_s"] + report["first_draw_s"]
        checks.append(
            (
                f"opening blocks the GUI for at most {args.open_s:g} s",
                bool(blocked <= args.open_s),
                f"{blocked:.2f} s",
            )
        )
    gaps = report.get("gaps_predict", np.empty(0))
    if gaps.size:
        checks.append(
            (
                f"no GUI gap above {args.freeze_ms:g} ms while predicting",
                bool(gaps.max() <= args.freeze_ms),
                f"max {gaps.max():.0f} ms",
            )
        )
    if "handover_s" in report:
        stall = report["handover_s"] + report["handover_draw_s"]
        checks.append(
            (
                f"the result hand-over stalls the GUI for at most {args.freeze_ms:g} ms",
                bool(stall * 1000 <= args.freeze_ms),
                f"{stall * 1000:.0f} ms",
            )
        )
    if "scroll_s" in report:
        worst = report["scroll_s"].max() * 1000
        checks.append(
            (
                f"no scroll step above {args.freeze_ms:g} ms",
                bool(worst <= args.freeze_ms),
                f"max {worst:.0f} ms",
            )
        )
    viewer.close()
    gc.collect()
    hwm = proc_status().get("VmHWM")

    import psutil

    peaks = sampler.peaks
    lines = ["", "## Machine", "", *machine(), f"- Command: `xvfb-run -a {command}`"]
    lines += [
        f"- napari {__import__('napari').__version__}, Qt via {__import__('qtpy').API_NAME}, "
        f"GL: {report.get('gl', 'unknown')}",
        "",
        "## A big TIFF in napari: open, predict, scroll",
        "",
        f"Image: `{path}`, {shape[0]} x {shape[1]} uint16 ({pixels * 2 / 2**30:.2f} GiB, "
        f"{pixels / 1e6:.0f} Mpx), {args.layout} layout. Model: {model_text}; widget tile size "
        f"{args.tile or 'automatic'}, batch {args.batch}, device {args.device}.",
        "",
        "| what | value |",
        "|---|---|",
        f"| RSS with an empty viewer (MiB) | {rss_cell(report.get('rss_viewer', {}))} |",
        f"| open: `viewer.open` / first draw | {report.get('open_s', float('nan')):.2f} s / "
        f"{report.get('first_draw_s', float('nan')):.2f} s |",
        f"| RSS after open and first draw (MiB) | {rss_cell(report.get('rss_open', {}))} |",
    ]
    if "cancel_s" in report:
        lines += [
            f"| Cancel after {args.cancel_after:g} s: worker stopped after | "
            f"{report['cancel_s']:.2f} s |",
            f"| GUI gaps during the cancelled run | {gap_summary(report['gaps_cancel'], args.freeze_ms)} |",
        ]
    if "predict_s" in report:
        predict_peak = peaks.get("predict", {})
        lines += [
            f"| predict: Run click to result ready / to layer added | {report['engine_s']:.1f} s "
            f"({pixels / 1e6 / report['engine_s']:.2f} Mpx/s) / {report['predict_s']:.1f} s "
            f"({pixels / 1e6 / report['predict_s']:.2f} Mpx/s) |",
            f"| progress updates seen by the widget | {report['progress_events']} "
            f"({report['tiles']} tiles) |",
            f"| GUI gaps while predicting ({args.tick_ms} ms timer) | "
            f"{gap_summary(report['gaps_predict'], args.freeze_ms)} |",
            f"| result hand-over on the GUI thread (`_add_result` + next draw) | "
            f"{report['handover_s']:.2f} s + {report['handover_draw_s']:.2f} s |",
            f"| GUI gaps, whole run incl. hand-over | {gap_summary(report['gaps_all'], args.freeze_ms)} |",
            f"| CPU while predicting: GUI thread / whole process | {report['cpu_gui_s']:.1f} s / "
            f"{report['cpu_all_s']:.1f} s (over {report['predict_s']:.1f} s wall) |",
            f"| peak RSS while predicting (MiB, sampled every 50 ms) | {rss_cell(predict_peak)} |",
        ]
    if "scroll_s" in report:
        scroll = report["scroll_s"] * 1000
        lines += [
            f"| result layer data; one full read of it (`np.asarray(data[...])`) | "
            f"{report['result_kind']}; {report['full_read_s']:.2f} s |",
            f"| overview (reset_view + draw) | {report['overview_s'] * 1000:.0f} ms |",
            f"| scroll: {report['steps']} camera moves showing ~{args.view} px "
            f"(canvas {report['canvas'][0]} x {report['canvas'][1]}) | median {np.median(scroll):.0f} ms, "
            f"max {scroll.max():.0f} ms per step (move + draw) |",
            f"| RSS after scrolling (MiB) | {rss_cell(report['rss_scroll'])} |",
        ]
    lines += [
        f"| peak RSS of the whole run (VmHWM, MiB) | {hwm / MIB:.0f} |"
        if hwm
        else f"| RSS at the end (MiB) | {psutil.Process().memory_info().rss / MIB:.0f} |"
    ]
    if "screenshot" in report:
        shot, centre, share = report["screenshot"]
        lines += [
            "",
            f"Screenshot: `{shot}` (camera centre y={centre[0]:.0f}, x={centre[1]:.0f}; "
            f"{share:.0%} of the view labelled).",
        ]
    if report.get("notices"):
        lines += ["", "Warnings and errors (napari notifications, Python warnings):", ""]
        lines += [f"- {text}" for text in report["notices"]]
    lines += ["", "Checks:", ""]
    lines += [
        f"- {'ok' if ok else '**FAIL**'}: {name}" + (f" ({d})" if d else "")
        for name, ok, d in checks
    ]
    lines += [
        "",
        "RSS: VmRSS from /proc/self/status; anon = RssAnon (heap, arrays), file = RssFile "
        "(mapped files: a memory-mapped TIFF's touched pages, which the kernel drops when memory "
        "is short). GUI gaps: intervals between ticks of a QTimer on the GUI thread; a gap well "
        "above the timer period is a time the viewer could not respond.",
    ]
    print("\n".join(lines), flush=True)
    return 0 if all(ok for _, ok, _ in checks) else 1


def gl_renderer() -> str:
    """The OpenGL renderer and its largest 2D texture (call while a canvas is current)."""
    try:
        from vispy.gloo import gl

        renderer = gl.glGetParameter(gl.GL_RENDERER)
        size = gl.glGetParameter(gl.GL_MAX_TEXTURE_SIZE)
        return f"{renderer}, max texture {size} px"
    except Exception as err:
        return f"unknown ({err})"


if __name__ == "__main__":
    sys.exit(main())
