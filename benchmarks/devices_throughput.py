"""Several prediction workers on one machine, side by side with one (issue 14).

Predicts a uint16 ``--size`` x ``--size`` image with the bundled model (``--tile`` px tiles)
with each ``--devices`` entry in turn, interleaved over ``--repeat`` rounds, and prints wall
and CPU seconds (``time.process_time``, all threads) per run and whether the labels equal the
first entry's. On a machine without GPUs the entries are CPU worker lists: ``cpu`` (one worker,
PyTorch's default threads), ``cpu@1`` (one worker on one thread) and ``cpu,cpu`` (two workers,
which divide the threads between them). With GPUs: e.g. ``cuda:0 cuda:0,cuda:1 cuda:all``.
Not a test; compare ratios from one run, not absolute figures.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_tiled_unet.inference import predict, resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1536, help="image edge, px")
    parser.add_argument("--tile", type=int, default=512, help="network tile edge, px")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds")
    parser.add_argument(
        "--devices",
        nargs="+",
        default=["cpu", "cpu@1", "cpu,cpu"],
        help="device entries; NAME@T runs with T torch threads",
    )
    args = parser.parse_args()
    net = resolve_model(None)
    rng = np.random.default_rng(0)
    image = (rng.random((args.size, args.size)) * 4000).astype(np.uint16)
    default_threads = torch.get_num_threads()
    device0 = args.devices[0].split("@")[0].split(",")[0]
    predict(image[:256, :256], net, device=device0)  # warm-up
    runs: dict[str, list[tuple[float, float]]] = {d: [] for d in args.devices}
    labels: dict[str, np.ndarray] = {}
    for _ in range(args.repeat):
        for entry in args.devices:
            device, _, threads = entry.partition("@")
            torch.set_num_threads(int(threads) if threads else default_threads)
            wall, cpu = time.perf_counter(), time.process_time()
            labels[entry] = predict(image, net, device=device, tile_shape=(args.tile,) * 2)
            runs[entry].append((time.perf_counter() - wall, time.process_time() - cpu))
            torch.set_num_threads(default_threads)
    first = args.devices[0]
    best0 = min(w for w, _ in runs[first])
    print(f"{args.size}² uint16, tiles {args.tile}, torch threads {default_threads}\n")
    print(f"| device | runs: wall s / CPU s | best wall / {first}'s | labels equal |")
    print("|---|---|---:|---|")
    for entry, times in runs.items():
        cells = ", ".join(f"{w:.1f} / {c:.1f}" for w, c in times)
        same = bool((labels[entry] == labels[first]).all())
        print(f"| {entry} | {cells} | {min(w for w, _ in times) / best0:.2f} | {same} |")


if __name__ == "__main__":
    main()
