"""Probe: how much does a model's object F1 depend on where nuclei sit in the normalised range?

Percentile normalisation maps an image's brightest pixels (the 99.8th percentile) to 1. In an
image with a few very bright objects, the typical nuclei sit far lower than in the training
images: DSB 2018's median nucleus is 0.15 above background after normalisation, HeLa's 0.36
(``--contrast`` prints these). This probe scores model files on every source of
``crossdomain_eval.py`` with each image's normalised intensities multiplied by a factor
(1, 1/2, 1/4 unless ``--factors`` says otherwise: the model's percentile normalisation
resolved on the image, its scale divided by the factor), so a model's sensitivity to
brightness is measured on images it was trained on other images of, not only on the one DSB
image::

    python benchmarks/brightness_probe.py --json brightness.json sample_data/default_model.pt
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crossdomain_eval import Source, json_saver, load_sources, model_probe_parser, score

from napari_tiled_unet import load_model, predict
from napari_tiled_unet.normalization import Normalization

FACTORS = (1.0, 0.5, 0.25)


def dimmed_segment(model, factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """Segment with ``model``, each image's normalised intensities multiplied by ``factor``."""

    def segment(image: np.ndarray) -> np.ndarray:
        fixed = model.info.input_normalization.resolve(image)
        if fixed.mode == "none":
            fixed = Normalization("fixed")  # the identity, so the factor still applies
        scale = np.asarray(fixed.scale, float) / factor
        fixed = Normalization("fixed", offset=fixed.offset, scale=tuple(scale.ravel()))
        original = model.info
        model.info = original.replace(normalization=fixed)
        try:
            return predict(image, model, output="instances", device="cpu")
        finally:
            model.info = original

    return segment


def nucleus_contrast(sources: Sequence[Source]) -> dict[str, list[float]]:
    """Per source: the 10th, 25th and 50th percentile of its training nuclei's mean normalised
    intensity above the background around them (a 6 px ring), normalised as the default
    :class:`~napari_tiled_unet.normalization.Normalization` does (percentiles 1, 99.8 -> 0, 1)."""
    out = {}
    for s in sources:
        contrast = []
        for image, labels in s.train:
            x = Normalization().resolve(image).apply(image)
            means = ndi.mean(x, labels, np.arange(1, int(labels.max()) + 1))
            ring = ndi.binary_dilation(labels > 0, iterations=6) & (labels == 0)
            contrast.extend(means - np.median(x[ring]))
        out[s.name] = [round(float(v), 3) for v in np.percentile(contrast, [10, 25, 50])]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = model_probe_parser(__doc__, nargs="*")
    parser.add_argument("--contrast", action="store_true", help="print each source's contrast")
    parser.add_argument(
        "--factors", type=float, nargs="+", default=FACTORS, help="intensity factors to score"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sources = load_sources(smoke=False, synthetic_train=16)
    results: dict[str, dict] = {}
    save = json_saver(args.json)
    if args.contrast:
        results["nucleus contrast p10/p25/p50"] = nucleus_contrast(sources)
        print(results["nucleus contrast p10/p25/p50"], flush=True)
        save(results)
    for path in args.models:
        model = load_model(path)
        for factor in args.factors:
            start = time.perf_counter()
            segment = dimmed_segment(model, factor)
            scores = {s.name: round(score(segment, s.eval)["f1"], 3) for s in sources}
            results[f"{path} x{factor:g}"] = scores
            print(f"{path} x{factor:g}: {scores} ({time.perf_counter() - start:.0f} s)", flush=True)
            save(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
