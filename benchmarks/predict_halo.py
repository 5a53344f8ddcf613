"""What a cut halo costs in agreement and gains in speed and memory.

2D, measured: the bundled model on the bundled sample mirror-tiled to ``--size``; for each
halo, the default plan (largest tile within the memory budget), its speed (after one warm-up
prediction), and how far its probabilities and labels are from the exact tiling's (which
equals a whole-image pass).

3D, planned only (a forward pass over the exact plans below would take hours on a CPU): for
3D networks whose exact halo forces large tiles, the default tile per halo, its estimated
memory, and the work: input voxels the network processes per image voxel.

    python benchmarks/predict_halo.py --size 2048 --output benchmarks/results/predict_halo.md
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from predict_precision import sample_image

from napari_tiled_unet import UNet, default_model_path, load_model, predict
from napari_tiled_unet.inference import plan_for
from napari_tiled_unet.model.memory import format_bytes, tile_memory

NETWORKS_3D = [
    dict(depth=4, base_channels=16, ndim=3),
    dict(depth=4, base_channels=32, ndim=3),
    dict(depth=4, base_channels=16, ndim=3, anisotropic_levels=2),
    dict(depth=3, base_channels=16, ndim=3),
]


def _halo_name(net: UNet, halo: int | None) -> str:
    geometry = net.geometry.with_halo(halo)
    halos = "/".join(dict.fromkeys(str(b) for b, _ in geometry.halos))
    return f"{halos} (exact)" if geometry.exact else halos


def _work(plan) -> float:
    return len(plan) * math.prod(plan.tile_shape) / math.prod(plan.image_shape)


def measure_2d(size: int, halos: list[int | None], device: str) -> list[str]:
    net = load_model(default_model_path())
    image = sample_image(size)
    rows = [
        f"2D: bundled model (depth {net.config.depth}, base {net.config.base_channels}), "
        f"{size}×{size} px, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "",
        "| halo | tile (planned) | tiles | work | estimated memory | Mpx/s | max abs Δp | "
        "pixels abs Δp > 0.01 | labels equal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    predict(image[:1024, :1024], net, device=device)  # warm-up: first-call costs out of the rows
    reference = None
    for halo in halos:
        plan = plan_for(image.shape, net, halo=halo)
        start = time.perf_counter()
        probs = predict(image, net, output="probabilities", halo=halo, device=device)
        seconds = time.perf_counter() - start
        if reference is None:
            reference = probs
        delta = np.abs(probs - reference).max(0)
        equal = np.mean(probs.argmax(0) == reference.argmax(0))
        rows.append(
            f"| {_halo_name(net, halo)} | {plan.tile_shape[0]} | {len(plan)} | "
            f"{_work(plan):.2f} | {format_bytes(tile_memory(net.config, plan.tile_shape))} | "
            f"{image.size / seconds / 1e6:.2f} | {delta.max():.1e} | {np.mean(delta > 0.01):.1e} | "
            f"{100 * equal:.3f} % |"
        )
        print(rows[-1], flush=True)
    return rows


def plan_3d(shape: tuple[int, ...], halos: list[int | None]) -> list[str]:
    rows = [
        "",
        f"3D, planned for a {'×'.join(map(str, shape))} stack (no forward pass):",
        "",
        "| network | halo | default tile | tiles | work | estimated memory |",
        "|---|---|---|---|---|---|",
    ]
    for config in NETWORKS_3D:
        net = UNet(**config)
        name = ", ".join(f"{k} {v}" for k, v in config.items() if k != "ndim")
        seen = set()
        for halo in halos:
            if net.geometry.with_halo(halo) in seen:
                continue  # a halo at least the exact one: the exact plan again
            seen.add(net.geometry.with_halo(halo))
            plan = plan_for(shape, net, halo=halo)
            rows.append(
                f"| {name} | {_halo_name(net, halo)} | {'×'.join(map(str, plan.tile_shape))} | "
                f"{len(plan)} | {_work(plan):.1f} | "
                f"{format_bytes(tile_memory(net.config, plan.tile_shape))} |"
            )
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--halos", type=int, nargs="*", default=[75, 59, 43, 27, 11], help="besides exact"
    )
    parser.add_argument("--shape-3d", type=int, nargs=3, default=[64, 512, 512])
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # the over-budget warnings: the table shows the memory
    halos = [None, *args.halos]
    rows = measure_2d(args.size, halos, args.device) + plan_3d(tuple(args.shape_3d), halos)
    if args.output:
        args.output.write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
