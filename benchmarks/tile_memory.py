"""Measured peak memory of one tile's forward pass against the engine's estimate.

Each case runs in a fresh process: the resident-memory high-water mark (Linux ``/proc``) is
reset just before the first forward pass over a tile, so the peak it reaches above the
resident memory before is what that pass added (activations, one-off buffers of the
convolution library). ``napari_tiled_unet.model.memory.tile_memory`` must stay above it; the
default tile of each network (the largest within the budget) is listed too.

    python benchmarks/tile_memory.py --output benchmarks/results/tile_memory.md
    python benchmarks/tile_memory.py --one '{"depth": 2, "base_channels": 8, "ndim": 3}' '[96, 96, 96]'
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CASES = [
    ({"num_classes": 3, "depth": 4, "base_channels": 16}, [1280, 1280]),
    ({"num_classes": 3, "depth": 4, "base_channels": 16}, [1024, 1024]),
    ({"num_classes": 3, "depth": 4, "base_channels": 16, "padding": "valid"}, [1196, 1196]),
    ({"depth": 4, "base_channels": 32}, [768, 768]),
    ({"depth": 4, "base_channels": 64}, [512, 512]),
    ({"depth": 2, "base_channels": 8, "ndim": 3}, [96, 96, 96]),
    ({"depth": 2, "base_channels": 8, "ndim": 3}, [144, 144, 144]),
    ({"depth": 3, "base_channels": 16, "ndim": 3}, [112, 112, 112]),
    ({"depth": 3, "base_channels": 8, "ndim": 3, "anisotropic_levels": 1}, [96, 176, 176]),
    ({"depth": 4, "base_channels": 16, "ndim": 3}, [128, 128, 128]),
    ({"depth": 4, "base_channels": 32, "ndim": 3}, [96, 96, 96]),
]


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def measure_one(config: dict, tile: list[int]) -> dict:
    """Peak resident memory (bytes) the first forward pass over ``tile`` adds, here."""
    import torch

    from napari_tiled_unet.config import UNetConfig
    from napari_tiled_unet.inference import inference_setup
    from napari_tiled_unet.model.memory import tile_memory
    from napari_tiled_unet.model.unet import UNet

    torch.manual_seed(0)
    cfg = UNetConfig(**config)
    net = UNet.from_config(cfg)
    fmt = torch.channels_last if cfg.ndim == 2 else torch.channels_last_3d
    x = torch.rand((1, cfg.in_channels, *tile)).contiguous(memory_format=fmt)
    with inference_setup(net, torch.device("cpu")), torch.inference_mode():
        Path("/proc/self/clear_refs").write_text("5")  # high-water mark := resident now
        before = _status("VmRSS")
        net(x)
        peak = _status("VmHWM") - before
    return {"measured": peak, "estimate": tile_memory(cfg, tile)}


def _default_tile(config: dict) -> tuple[int, ...]:
    from napari_tiled_unet.config import UNetConfig
    from napari_tiled_unet.model.geometry import UNetGeometry
    from napari_tiled_unet.model.memory import voxel_budget
    from napari_tiled_unet.tiling.plan import default_tile_shape

    cfg = UNetConfig(**config)
    return default_tile_shape(UNetGeometry.from_config(cfg), cfg.ndim, voxel_budget(cfg))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--one", nargs=2, metavar=("CONFIG_JSON", "TILE_JSON"))
    parser.add_argument("--output", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(json.loads(args.one[0]), json.loads(args.one[1]))))
        return 0

    import torch

    from napari_tiled_unet.model.memory import TILE_MEMORY_BUDGET, format_bytes

    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"budget {format_bytes(TILE_MEMORY_BUDGET)}",
        "",
        "| network | tile | measured | estimate | measured / estimate | default tile |",
        "|---|---|---|---|---|---|",
    ]
    ratios = []
    for config, tile in CASES:
        run = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps(config), json.dumps(tile)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(run.stdout.strip().splitlines()[-1])
        ratio = result["measured"] / result["estimate"]
        ratios.append(ratio)
        name = ", ".join(f"{k} {v}" for k, v in config.items())
        lines.append(
            f"| {name} | {'×'.join(map(str, tile))} | {format_bytes(result['measured'])} | "
            f"{format_bytes(result['estimate'])} | {ratio:.2f} | "
            f"{'×'.join(map(str, _default_tile(config)))} |"
        )
        print(lines[-1], flush=True)
    lines += ["", f"measured / estimate: {min(ratios):.2f} to {max(ratios):.2f}"]
    print(lines[-1])
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
