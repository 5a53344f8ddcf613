"""How the cost of the "auto" label-mode reading grows with the labels' size (ratios, one run).

Instance masks made by tiling the bundled ``nuclei_labels.tif`` (ids offset per copy, so each
stays one blob) at 2048², 4096² and 8192² px, in memory; each is read 5 times and the median
time is printed with its ratio to the 2048² case (read whole: 4.2 Mpx). Arrays over
``DETECT_PIXELS`` are sampled, so the ratio should stay near 1 rather than grow with the area
(16× from 2048² to 8192²)::

    python benchmarks/label_mode_cost.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import tifffile

from napari_tiled_unet.model.modelfile import default_model_path
from napari_tiled_unet.training.label_mode import detect_label_mode


def tiled_masks(edge: int) -> np.ndarray:
    """Copies of the sample's masks, each copy's ids offset so that every id is one blob."""
    labels = tifffile.imread(default_model_path().parent / "nuclei_labels.tif").astype(np.int32)
    top = int(labels.max())
    rows, cols = -(-edge // labels.shape[0]), -(-edge // labels.shape[1])
    copies = [
        [np.where(labels > 0, labels + (r * cols + c) * top, 0) for c in range(cols)]
        for r in range(rows)
    ]
    return np.block(copies)[:edge, :edge]


def main() -> None:
    detect_label_mode(np.zeros((8, 8), np.uint8))  # imports outside the timing
    base = None
    print("| labels | reading | median time | × 2048² |")
    print("|---|---|---|---|")
    for edge in (2048, 4096, 8192):
        labels = tiled_masks(edge)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            reading = detect_label_mode(labels)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        base = base or median
        print(f"| {edge}² | {reading.reason} | {median * 1e3:.0f} ms | {median / base:.2f} |")


if __name__ == "__main__":
    main()
