"""Speed and agreement of the forward-pass precisions (float32, bfloat16, float16) on one device.

For each precision and tile size, times :func:`napari_tiled_unet.predict` on a realistic image
(the bundled sample mirror-tiled to ``--size``) and compares its labels and probabilities with
the float32 tiled result and with one whole-image float32 forward pass (the exact reference).
On CUDA it also reports float32 with TF32 convolutions allowed (PyTorch's default for cuDNN),
which is faster but not exact. Prints a markdown table.

Run::

    python benchmarks/predict_precision.py --device cuda --size 4096 --tiles 1024 2048
    python benchmarks/predict_precision.py --device cpu --size 2048 --tiles 1024
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import tifffile
import torch

from napari_tiled_unet import default_model_path, load_model, predict
from napari_tiled_unet.inference import forward_whole_image
from napari_tiled_unet.normalization import Normalization


def sample_image(size: int) -> np.ndarray:
    """The bundled nuclei image, mirror-tiled to ``size`` × ``size`` (uint16)."""
    from importlib.resources import files

    sample = tifffile.imread(files("napari_tiled_unet") / "sample_data" / "nuclei.tif")
    return np.pad(sample, [(0, max(0, size - n)) for n in sample.shape], "reflect")[:size, :size]


def cpu_name() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tiles", type=int, nargs="+", default=[1024])
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16", "float16"])
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    net = load_model(args.model or default_model_path())
    image = sample_image(args.size)
    name = torch.cuda.get_device_name() if device.type == "cuda" else cpu_name()
    print(f"# {' '.join(sys.argv)}\n# device {device} ({name}), torch {torch.__version__}")
    print(f"# model {net.config}, image {image.shape} {image.dtype}\n")

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    norm = Normalization.from_dict(net.metadata.get("normalization")).resolve(image[None])
    whole, _ = timed(lambda: forward_whole_image(norm.apply(image[None]), net, str(device)), device)
    whole, t_whole = timed(
        lambda: forward_whole_image(norm.apply(image[None]), net, str(device)), device
    )
    mpx = image.size / 1e6
    print("| precision | tile | batch | Mpx/s | max abs Δ prob vs whole | labels ≠ float32 tiled |")
    print("|---|---|---|---|---|---|")
    print(f"| float32 whole image | – | – | {mpx / t_whole:.2f} | 0 | – |")
    precisions = [p for p in args.precisions if not (p == "float16" and device.type == "cpu")]
    if device.type == "cuda":
        precisions.insert(1, "float32+tf32")
    for tile in args.tiles:
        for batch in args.batch:
            reference = None
            for precision in precisions:
                tf32 = precision == "float32+tf32"
                torch.backends.cudnn.allow_tf32 = tf32
                options = dict(
                    tile_shape=(tile, tile),
                    batch_size=batch,
                    device=str(device),
                    output="probabilities",
                    precision="float32" if tf32 else precision,
                )
                predict(image[:tile, :tile], net, **options)  # warm-up
                probs, seconds = timed(lambda o=options: predict(image, net, **o), device)
                labels = probs.argmax(0)
                if reference is None:
                    reference = labels
                changed = np.mean(labels != reference)
                deviation = np.abs(probs - whole).max()
                print(
                    f"| {precision} | {tile} | {batch} | {mpx / seconds:.2f} | {deviation:.2e} "
                    f"| {changed:.2e} |",
                    flush=True,
                )
            torch.backends.cudnn.allow_tf32 = False


if __name__ == "__main__":
    main()
