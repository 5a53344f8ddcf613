"""Probe: does averaging a network over flips (test-time augmentation) help on unseen nuclei?

Scores model files on every source of ``crossdomain_eval.py`` twice: as they are, and with the
network's logits averaged over the four flips of each tile (identity, X, Y, both; each flipped
back before averaging). The flip average is patched into ``UNet.forward`` here only, for the
measurement; the plugin has no such option (the results, in
``benchmarks/results/crossdomain_eval.md``, "Weight average and flip average", did not earn
one)::

    python benchmarks/flip_average_probe.py --json flips.json sample_data/default_model.pt
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crossdomain_eval import json_saver, load_sources, model_probe_parser, score, unet_segment

from napari_tiled_unet import load_model
from napari_tiled_unet.model.unet import UNet

FLIPS = ((-1,), (-2,), (-2, -1))


def main(argv: list[str] | None = None) -> int:
    parser = model_probe_parser(__doc__)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    plain_forward = UNet.forward

    def flip_forward(self: UNet, x: torch.Tensor) -> torch.Tensor:
        out = plain_forward(self, x)
        for dims in FLIPS:
            out = out + plain_forward(self, x.flip(dims)).flip(dims)
        return out / (len(FLIPS) + 1)

    sources = load_sources(smoke=False, synthetic_train=16)
    results: dict[str, dict[str, float]] = {}
    try:
        for path in args.models:
            model = load_model(path)
            for mode, forward in (("as it is", plain_forward), ("flip average", flip_forward)):
                UNet.forward = forward
                start = time.perf_counter()
                scores = {
                    s.name: round(score(unet_segment(model), s.eval)["f1"], 3) for s in sources
                }
                results[f"{path} {mode}"] = scores
                print(f"{path} {mode}: {scores} ({time.perf_counter() - start:.0f} s)", flush=True)
    finally:
        UNet.forward = plain_forward
    json_saver(args.json)(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
