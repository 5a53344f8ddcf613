"""Does the viewer stall while the widgets predict and train? GUI-thread gaps per phase.

A real napari viewer (under ``xvfb-run`` on a machine without a display) docks the Predict
widget, predicts an image twice (the first run pays for importing torch) and then, in another
process, trains a small model with the Train widget. A ``QTimer`` ticks every ``--interval-ms``
(10 ms) on the GUI thread; the gap between two ticks is how long the GUI could not react. Each
gap is counted in the phase during which it ended:

- ``open widget``: docking the widget and ``--settle`` seconds of idling after it;
- ``predict N``: from clicking Run until the result reaches the widget;
- ``add result N``: the widget adding the result layer, and ``--settle`` seconds after it
  (napari converts the labels for display and draws them);
- ``train``: from clicking Train until the run has finished, and ``--settle`` s after it.

For each phase it prints its duration, the largest gap, the 99th percentile gap and the number
of gaps above 100 ms (a stall a user notices). Cases (each in a fresh process, so that the first
run imports torch):

- ``bundled``: a ``--bundled-shape`` (2432 x 4080) mirror-tiling of the bundled nuclei image,
  predicted with the bundled default model;
- ``tiny``: a ``--tiny-shape`` (7904 x 8160, just below the widget's 8192² on-disk threshold)
  image, predicted with a tiny hand-set network (``napari_big_tiff.tiny_threshold_model``), so
  that the engine is fast and handing the result to the viewer dominates;
- ``train``: the Train widget on the bundled nuclei pair, ``--train-iterations`` steps of a
  small network.
- ``add`` (only when asked for): the hand-over alone, no engine: a label image of each size
  added to the viewer as ``int32``, as ``uint16`` and as a ``uint16`` pyramid, twice each
  (phases ``<shape> <kind> (<rep>)``; the ``remove`` phases in between are housekeeping);
- ``cli`` (only when asked for): the control. The ``tiny`` case's image and model, predicted
  by ``napari-tiled-unet predict`` in another process while the viewer (showing the image)
  idles: the stalls left when the engine shares no interpreter (GIL) with the viewer.

``--src DIR`` runs the cases with another source tree first on the path (e.g. an export of an
older commit: ``git archive <commit> src | tar -x -C /tmp/base``) and ``--compare DIR`` runs
every case with both trees, one after the other, and prints both tables: side-by-side numbers
from one invocation on one machine.

Not a test: it prints numbers (gaps depend on the machine and its load).

Usage::

    xvfb-run -a python benchmarks/gui_stall.py                  # all cases, full sizes
    xvfb-run -a python benchmarks/gui_stall.py --quick          # quarter-size images, 10 steps
    xvfb-run -a python benchmarks/gui_stall.py --cases tiny --tiny-shape 4096x4096
    xvfb-run -a python benchmarks/gui_stall.py --compare /tmp/base/src
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STALL_MS = 100.0
CASES = ("bundled", "tiny", "train")  # and "cli", the control (not run by default)


# -- measuring -----------------------------------------------------------------------------


class GapRecorder:
    """A precise QTimer on the GUI thread and named marks; gaps are split by the marks."""

    def __init__(self, interval_ms: int = 10) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.interval_ms = interval_ms
        self.ticks: list[float] = []
        self.marks: list[tuple[float, str]] = []
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self) -> None:
        self.ticks = [time.perf_counter()]
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self.ticks.append(time.perf_counter())
        self.mark("end")

    def mark(self, phase: str) -> None:
        self.marks.append((time.perf_counter(), phase))

    def gaps_ms(self, start: float = -np.inf, end: float = np.inf) -> np.ndarray:
        """Tick-to-tick intervals (ms) of the gaps that end in ``[start, end]``."""
        ticks = np.asarray(self.ticks)
        keep = (ticks[1:] >= start) & (ticks[1:] <= end)
        return np.diff(ticks)[keep] * 1000

    def phases(self) -> list[dict[str, Any]]:
        """Per phase: its name, duration (s) and the gaps (ms) that ended in it."""
        ticks = np.asarray(self.ticks)
        gaps, ends = np.diff(ticks) * 1000, ticks[1:]
        rows = []
        for (start, name), (end, _next) in zip(self.marks, self.marks[1:], strict=False):
            inside = gaps[(ends > start) & (ends <= end)]
            rows.append({"phase": name, "seconds": end - start, "gaps": inside.tolist()})
        return rows


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Run the Qt event loop (as napari's own would) until ``condition()`` or ``timeout``."""
    from qtpy.QtCore import QEventLoop, QTimer

    deadline = time.perf_counter() + timeout
    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: (condition() or time.perf_counter() > deadline) and loop.quit())
    timer.start()
    if not condition():
        loop.exec()
    timer.stop()
    return condition()


def idle(seconds: float) -> None:
    end = time.perf_counter() + seconds
    wait_until(lambda: time.perf_counter() >= end, seconds + 1)


# -- inputs --------------------------------------------------------------------------------


def mirror_tiled(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` mirror-tiled (no seams) and cropped to ``shape``."""
    block = np.block([[image, image[:, ::-1]], [image[::-1], image[::-1, ::-1]]])
    reps = (-(-shape[0] // block.shape[0]), -(-shape[1] // block.shape[1]))
    return np.ascontiguousarray(np.tile(block, reps)[: shape[0], : shape[1]])


def parse_shape(text: str) -> tuple[int, int]:
    y, x = (int(n) for n in text.lower().split("x"))
    return y, x


# -- the cases (each runs in its own process) ------------------------------------------------


def predict_case(case: str, args: argparse.Namespace, recorder: GapRecorder, viewer) -> dict:
    import tifffile

    from napari_tiled_unet._napari.predict_widget import MODEL_FILE, PredictWidget
    from napari_tiled_unet._napari.sample_data import SAMPLE_DIR

    sample = tifffile.imread(SAMPLE_DIR / "nuclei.tif")
    shape = parse_shape(args.bundled_shape if case == "bundled" else args.tiny_shape)
    layer = viewer.add_image(mirror_tiled(sample, shape), name="image")
    model_path = None
    if case == "tiny":
        sys.path.insert(0, str(HERE))
        from napari_big_tiff import tiny_threshold_model  # the benchmark beside this one

        model_path = tiny_threshold_model(Path(args.workdir) / "tiny_threshold.pt")
    idle(args.settle)

    recorder.start()
    recorder.mark("open widget")
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    widget.image.value = layer
    if model_path is not None:
        widget.model_file.value = model_path
        widget.model.value = MODEL_FILE
    widget.device.value = "cpu"
    idle(args.settle)

    runs = []
    for run in (1, 2):
        recorder.mark(f"predict {run}")
        added: list[float] = []
        original = type(widget)._add_result.__get__(widget)

        def add_result(*a, _run=run, _added=added, _original=original):
            recorder.mark(f"add result {_run}")
            _original(*a)
            _added.append(time.perf_counter())

        widget._add_result = add_result  # looked up by run(), in the old code and the new
        started = time.perf_counter()
        if widget.run() is None:
            raise SystemExit(f"Run refused: {widget.status.value}")
        wait_until(lambda: not widget.running, 3600)
        if not added:
            raise SystemExit(f"no result: {widget.status.value}")
        idle(args.settle)
        result = viewer.layers[-1]
        runs.append(
            {
                "run": run,
                "seconds_to_result": added[0] - started,
                "result": f"{type(result).__name__} "
                f"{'multiscale ' if result.multiscale else ''}"
                f"{getattr(result.data[0] if result.multiscale else result.data, 'dtype', '?')}",
            }
        )
        viewer.layers.remove(result)
        del result
        idle(1)
    recorder.stop()
    return {"shape": shape, "runs": runs, "model": "tiny" if model_path else "bundled"}


def cli_case(args: argparse.Namespace, recorder: GapRecorder, viewer) -> dict:
    """The control: the ``tiny`` case predicted by the command line in another process."""
    import tifffile

    from napari_tiled_unet._napari.sample_data import SAMPLE_DIR

    sys.path.insert(0, str(HERE))
    from napari_big_tiff import tiny_threshold_model  # the benchmark beside this one

    shape = parse_shape(args.tiny_shape)
    image = mirror_tiled(tifffile.imread(SAMPLE_DIR / "nuclei.tif"), shape)
    viewer.add_image(image, name="image")
    work = Path(args.workdir)
    tifffile.imwrite(work / "cli_input.tif", image)
    model = tiny_threshold_model(work / "tiny_threshold.pt")
    command = [
        *(sys.executable, "-m", "napari_tiled_unet.cli", "predict", str(work / "cli_input.tif")),
        *("--model", str(model), "--output", str(work / "cli_output.tif"), "--device", "cpu"),
    ]
    idle(args.settle)
    recorder.start()
    recorder.mark("CLI predicts in another process")
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: process.poll() is not None, 3600)
    seconds = time.perf_counter() - started
    recorder.stop()
    if process.returncode:
        raise SystemExit(f"the command line failed: {' '.join(command)}")
    return {"shape": shape, "model": "tiny, command line", "seconds": seconds}


def add_case(args: argparse.Namespace, recorder: GapRecorder, viewer) -> dict:
    """The result hand-over alone: one label image added as int32, as uint16 and as a uint16
    pyramid (what the widget now hands over), twice each, alternating, after a warm-up layer."""
    from napari_tiled_unet.io.pyramid import strided_levels

    def contiguous_pyramid(array):  # as the widget's worker builds it (_napari/_results.py)
        return [array, *(np.ascontiguousarray(level) for level in strided_levels(array)[1:])]

    idle(args.settle)
    recorder.start()
    recorder.mark("warm-up: a first small labels layer")
    viewer.layers.remove(viewer.add_labels(np.zeros((64, 64), np.uint8)))
    idle(1)
    rows = []
    for text in (args.bundled_shape, args.tiny_shape):
        shape = parse_shape(text)
        ids = (np.arange(shape[0] * shape[1], dtype=np.uint32).reshape(shape) // 5000) % 3000
        for rep in (1, 2):
            for kind in ("int32", "uint16", "uint16 pyramid"):
                data = ids.astype(np.int32 if kind == "int32" else np.uint16)
                levels = contiguous_pyramid(data) if kind.endswith("pyramid") else [data]
                idle(0.5)
                recorder.mark(f"{shape[0]}×{shape[1]} {kind} ({rep})")
                many = len(levels) > 1  # an image no larger than a level stays one array
                layer = viewer.add_labels(levels if many else levels[0], multiscale=many)
                idle(args.settle)
                recorder.mark("remove")
                viewer.layers.remove(layer)
                del layer, levels, data
                idle(0.5)
        rows.append(text)
    recorder.stop()
    return {"shapes": rows}


def train_case(args: argparse.Namespace, recorder: GapRecorder, viewer) -> dict:
    import tifffile

    from napari_tiled_unet._napari.sample_data import SAMPLE_DIR
    from napari_tiled_unet._napari.train_widget import TrainWidget

    viewer.add_image(tifffile.imread(SAMPLE_DIR / "nuclei.tif"), name="nuclei")
    viewer.add_labels(tifffile.imread(SAMPLE_DIR / "nuclei_labels.tif"), name="nuclei labels")
    idle(args.settle)
    recorder.start()
    recorder.mark("open widget")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.label_mode.value = "instance"
    widget.base_channels.value = 8
    widget.depth.value = 3
    widget.tile_size.value = 128
    widget.batch_size.value = 2
    widget.iterations.value = args.train_iterations
    widget.device.value = "cpu"
    idle(args.settle)
    recorder.mark("train")
    started = time.perf_counter()
    if widget.train() is None:
        raise SystemExit(f"Train refused: {widget.status.value}")
    wait_until(lambda: not widget.running, 3600)
    seconds = time.perf_counter() - started
    idle(args.settle)
    recorder.stop()
    return {"iterations": args.train_iterations, "seconds": seconds, "status": widget.status.value}


def run_case(case: str, args: argparse.Namespace) -> dict:
    import napari
    from qtpy import API_NAME

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    recorder = GapRecorder(args.interval_ms)
    try:
        if case == "train":
            info = train_case(args, recorder, viewer)
        elif case == "cli":
            info = cli_case(args, recorder, viewer)
        elif case == "add":
            info = add_case(args, recorder, viewer)
        else:
            info = predict_case(case, args, recorder, viewer)
    finally:
        viewer.close()
    info.update(case=case, qt=API_NAME, phases=recorder.phases())
    return info


# -- the driver ----------------------------------------------------------------------------


def summary(gaps: list[float]) -> tuple[str, str, str]:
    if not gaps:
        return "–", "–", "0"
    g = np.asarray(gaps)
    return f"{g.max():.0f}", f"{np.percentile(g, 99):.0f}", str(int((g > STALL_MS).sum()))


def table(results: list[dict], label: str) -> str:
    lines = [
        f"| case ({label}) | phase | seconds | max gap (ms) | p99 gap (ms) | gaps > {STALL_MS:.0f} ms |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        if result["case"] == "train":
            name = f"train, {result['iterations']} steps"
        elif result["case"] == "add":
            name = "add a result layer"
        else:
            y, x = result["shape"]
            name = f"{y}×{x}, {result['model']} model"
        for phase in result["phases"]:
            top, p99, stalls = summary(phase["gaps"])
            lines.append(
                f"| {name} | {phase['phase']} | {phase['seconds']:.1f} | {top} | {p99} | {stalls} |"
            )
        for run in result.get("runs", []):
            lines.append(
                f"| {name} | result {run['run']}: {run['result']} | "
                f"{run['seconds_to_result']:.1f} to result | | | |"
            )
    return "\n".join(lines)


def spawn(case: str, src: str | None, argv: list[str], workdir: str) -> dict:
    out = Path(workdir) / f"{case}.json"
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH", "")]))
    command = [sys.executable, __file__, *argv, "--case", case, "--json", str(out)]
    subprocess.run(command, env=env, check=True)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: %(default)s")
    parser.add_argument("--bundled-shape", default="2432x4080")
    parser.add_argument("--tiny-shape", default="7904x8160")
    parser.add_argument("--train-iterations", type=int, default=40)
    parser.add_argument("--interval-ms", type=int, default=10)
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds after steps")
    parser.add_argument("--quick", action="store_true", help="1216x2040 / 3952x4080, 10 steps")
    parser.add_argument("--src", help="a source tree to put first on the path")
    parser.add_argument("--compare", help="also run every case with this source tree")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.bundled_shape, args.tiny_shape, args.train_iterations = "1216x2040", "3952x4080", 10

    if args.case:  # a child process: one case
        result = run_case(args.case, args)
        Path(args.json).write_text(json.dumps(result))
        return 0

    child = [
        f"--bundled-shape={args.bundled_shape}",
        f"--tiny-shape={args.tiny_shape}",
        f"--train-iterations={args.train_iterations}",
        f"--interval-ms={args.interval_ms}",
        f"--settle={args.settle}",
    ]
    trees = [("this tree", args.src)] + ([("compared", args.compare)] if args.compare else [])
    with tempfile.TemporaryDirectory(prefix="gui-stall-") as workdir:
        args.workdir = workdir
        out = {label: [] for label, _src in trees}
        for case in args.cases.split(","):
            for label, src in trees:
                print(f"-- {case} ({label}{': ' + src if src else ''})", flush=True)
                out[label].append(spawn(case, src, [*child, "--workdir", workdir], workdir))
    qt = out[trees[0][0]][0]["qt"]
    print(f"\ncommand: {' '.join(shlex.quote(a) for a in ['python', *sys.argv])}")
    print(f"Qt: {qt}; CPUs: {os.cpu_count()}; timer every {args.interval_ms} ms\n")
    for label, _src in trees:
        print(table(out[label], label), "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
