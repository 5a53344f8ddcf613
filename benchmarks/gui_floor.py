"""What the GUI thread pays for things no plugin code runs: napari adding a layer, torch's import.

Issue 15 asks for no GUI-thread gap over 100 ms during a Predict or Train run. Two costs sit
below anything the plugin controls, and this script measures them with the same 10 ms
``QTimer`` as ``benchmarks/gui_stall.py``:

1. ``viewer.add_labels`` / ``add_image`` of tiny to mid-size arrays in a real napari viewer
   (layer, vispy visual and layer controls are built on the GUI thread by napari itself).
   A plugin that returns its result as a layer cannot get under this figure.
2. ``import torch`` in a worker thread of a plain Python process (no napari), with a 10 ms
   sleep loop on the main thread: torch's C extension initialises with the GIL held. Preloading
   torch's shared libraries with ``ctypes`` (which drops the GIL around ``dlopen``) is measured
   beside it.

Usage::

    xvfb-run -a python benchmarks/gui_floor.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import subprocess
import sys
import threading
import time

import numpy as np

IMPORT_PROBE = "--import-probe"


def _import_probe(preload: bool) -> None:
    """Child process: import torch in a thread; print the main thread's longest gap (ms)."""
    done = threading.Event()

    def work() -> None:
        if preload:
            lib = os.path.join(os.path.dirname(importlib.util.find_spec("torch").origin), "lib")
            for name in ("libc10.so", "libtorch_cpu.so", "libtorch.so", "libtorch_python.so"):
                if os.path.exists(os.path.join(lib, name)):
                    ctypes.CDLL(os.path.join(lib, name), mode=ctypes.RTLD_GLOBAL)
        import torch  # noqa: F401

        done.set()

    gaps, last = [], time.perf_counter()
    threading.Thread(target=work).start()
    while not done.is_set():
        time.sleep(0.01)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    print(max(gaps) * 1000)


def import_gaps(preload: bool, repeats: int) -> list[float]:
    argv = [sys.executable, __file__, IMPORT_PROBE, "preload" if preload else "plain"]
    return [float(subprocess.check_output(argv, text=True).split()[-1]) for _ in range(repeats)]


def add_layer_gaps(repeats: int) -> dict[str, list[float]]:
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    app = QApplication.instance()
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()

    def pump(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.002)

    cases = {
        "first Labels 64×64": ("labels", 64),
        "Labels 64×64": ("labels", 64),
        "Labels 512×512": ("labels", 512),
        "Labels 2048×2048": ("labels", 2048),
        "Image 64×64": ("image", 64),
    }
    found: dict[str, list[float]] = {name: [] for name in cases}
    pump(2.0)
    rng = np.random.default_rng(0)
    for repeat in range(repeats):
        for name, (kind, side) in cases.items():
            if name.startswith("first") and repeat:
                continue
            data = rng.integers(0, 50, (side, side)).astype(np.uint16)
            pump(0.5)
            start = time.perf_counter()
            add = viewer.add_labels if kind == "labels" else viewer.add_image
            QTimer.singleShot(0, lambda d=data, a=add: a(d if a == viewer.add_labels else d * 1.0))
            pump(1.5)
            stamps = [start] + [t for t in ticks if t > start]
            found[name].append(float(np.diff(stamps).max() * 1000))
            viewer.layers.clear()
    viewer.close()
    return found


def row(name: str, gaps: list[float]) -> str:
    values = ", ".join(f"{g:.0f}" for g in gaps)
    return (
        f"| {name} | {np.min(gaps):.0f} | {np.median(gaps):.0f} | {np.max(gaps):.0f} | {values} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print("| what | min of max gap (ms) | median | max | all runs |")
    print("|---|---:|---:|---:|---|")
    for name, gaps in add_layer_gaps(args.repeats).items():
        print(row(f"napari adds {name}", gaps), flush=True)
    print(row("import torch in a thread", import_gaps(False, args.repeats)), flush=True)
    print(row("same, libraries preloaded (ctypes)", import_gaps(True, args.repeats)), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == IMPORT_PROBE:
        _import_probe(sys.argv[2] == "preload")
        sys.exit(0)
    sys.exit(main())
