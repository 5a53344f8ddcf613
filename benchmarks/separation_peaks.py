"""Seeds at width peaks against seeds from eroded cores, and the size search's convexity check:
object F1 of model files on every source.

Each model's class probabilities of every evaluation image of ``crossdomain_eval.py``'s
sources (HeLa ``eval/``, DSB 2018, CHO, synthetic seed 2) are computed once; the objects are
then labelled three times, each rule with its own per-image object-size measurement
(:meth:`~napari_tiled_unet.separation.InstanceOptions.for_image`):

- **cores**: the rule before width peaks (``PEAK_FRACTION = 0``: interior eroded by a disk of
  0.2 diameters; the diameter search moves to a larger size whenever objects labelled there
  measure more than it, ``MEASURE_MARGIN = 0``, and for no other reason);
- **peaks_no_growth**: seeds at the interior's width peaks; from a settled diameter the search
  moves to 1.5x only when objects labelled there measure 5 % more than 1.5x (the rule before
  ``MEASURE_GROWTH`` and ``MEASURE_CONVEXITY``);
- **peaks**: this tree's rule (it also moves when they measure 1.25x what they measured at the
  settled diameter, and moves only when they stay as convex).

Usage::

    python benchmarks/separation_peaks.py --json peaks.json src/napari_tiled_unet/sample_data/default_model.pt FOLDS/*.pt
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crossdomain_eval import json_saver, load_sources, model_probe_parser

from napari_tiled_unet import load_model, predict
from napari_tiled_unet import separation as sep
from napari_tiled_unet.metrics import match_objects
from napari_tiled_unet.postprocess import labels_from_probabilities

RULES = ("cores", "peaks_no_growth", "peaks")
SETTINGS = ("PEAK_FRACTION", "MEASURE_MARGIN", "MEASURE_GROWTH", "MEASURE_CONVEXITY")


@contextmanager
def rule(name: str) -> Iterator[None]:
    """Label with the rule ``name`` of :data:`RULES` inside the block."""
    saved = {k: getattr(sep, k) for k in SETTINGS}
    if name != "peaks":
        sep.MEASURE_GROWTH = sep.MEASURE_CONVEXITY = math.inf
    if name == "cores":
        sep.PEAK_FRACTION, sep.MEASURE_MARGIN = 0.0, 0.0
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(sep, k, v)


def score_model(path: Path, sources) -> dict[str, dict[str, float]]:
    """Mean object F1 @ IoU 0.5 per source, for each rule."""
    model = load_model(path)
    options = sep.InstanceOptions.for_model(model.info)
    f1: dict[str, dict[str, list[float]]] = {r: {} for r in RULES}
    for source in sources:
        for image, labels in source.eval:
            probabilities = predict(image, model, output="probabilities", device="cpu")
            for name in RULES:
                with rule(name):
                    found = labels_from_probabilities(probabilities, "instance", options=options)
                f1[name].setdefault(source.name, []).append(match_objects(labels, found, 0.5).f1)
    return {r: {s: round(float(np.mean(v)), 3) for s, v in f1[r].items()} for r in RULES}


def main(argv: list[str] | None = None) -> int:
    parser = model_probe_parser(__doc__)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sources = load_sources(smoke=False, synthetic_train=16)
    results, save = {}, json_saver(args.json)
    for path in args.models:
        start = time.perf_counter()
        results[str(path)] = scores = score_model(path, sources)
        print(f"{path}: {json.dumps(scores)} ({time.perf_counter() - start:.0f} s)", flush=True)
        save(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
