"""Training throughput of the full pipeline versus a bare forward + backward loop.

The full pipeline is :class:`napari_tiled_unet.training.Trainer`: lazy tile sampling
(foreground-aware), augmentation (flips, rotations, elastic deformation, intensity jitter),
instance targets, the paper's weight map, the loss and the optimizer step. The bare loop runs
the same network, batch shape, loss and optimizer on tensors made once in advance. Their ratio
is what the data pipeline costs: 1.0 means it is free (hidden behind the step by prefetching).

Both run on the same device in the same process; validation is off so only training steps are
timed, and the first steps (warm-up) are not timed. Not a test: it prints numbers.

Usage::

    python benchmarks/train_throughput.py                       # defaults: 128 px tiles, batch 4
    python benchmarks/train_throughput.py --device cuda --tile 256 --base-channels 32 --depth 4
    python benchmarks/train_throughput.py --no-prefetch --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_tiled_unet.device import resolve_device
from napari_tiled_unet.model.unet import UNet
from napari_tiled_unet.training import NetworkSpec, TrainConfig, Trainer
from napari_tiled_unet.training.loss import make_loss
from napari_tiled_unet.training.optim import train_step


def synthetic_pair(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright discs of radius 5-12 px on noise: (image float32, instance labels uint32)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 20, (size, size)).astype(np.float32)
    labels = np.zeros((size, size), np.uint32)
    count = size * size // 1500
    centres = rng.integers(0, size, (count, 2))
    radii = rng.integers(5, 13, count)
    for k, ((cy, cx), r) in enumerate(zip(centres, radii, strict=True), start=1):
        y0, y1, x0, x1 = (
            max(cy - r, 0),
            min(cy + r + 1, size),
            max(cx - r, 0),
            min(cx + r + 1, size),
        )
        yy, xx = np.mgrid[y0:y1, x0:x1]
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels[y0:y1, x0:x1] == 0)
        labels[y0:y1, x0:x1][disc] = k
        image[y0:y1, x0:x1][disc] += 80
    return image, labels


def pipeline_rate(image, labels, config: TrainConfig, warmup: int) -> tuple[float, Trainer]:
    """Tiles per second of Trainer steps ``warmup+1 .. iterations``."""
    trainer = Trainer(image, labels, config)
    start = None
    for event in trainer.iter_run():
        if event.done == warmup:
            _sync(config.device)
            start = time.perf_counter()
    _sync(config.device)
    elapsed = time.perf_counter() - start
    return (config.iterations - warmup) * config.batch_size / elapsed, trainer


def bare_rate(trainer: Trainer, config: TrainConfig, warmup: int) -> float:
    """Tiles per second of the engine's own step (:func:`train_step`: forward + loss + backward
    + optimizer step) on one pre-made batch: the data pipeline is all that is left out."""
    device = resolve_device(config.device)
    amp = bool(config.mixed_precision and device.type == "cuda")
    model = UNet.from_config(trainer.best_model.config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    loss_fn = make_loss(config.loss)
    b, out = config.batch_size, trainer.layout.out_shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, trainer.channels, *config.tile_shape), dtype=np.float32)
    t = rng.integers(0, trainer.num_classes, (b, *out))
    w = rng.random((b, *out), dtype=np.float32) + 0.5
    start = None
    for step in range(config.iterations):
        if step == warmup:
            _sync(config.device)
            start = time.perf_counter()
        train_step(model, optimizer, scaler, loss_fn, device, amp, x, t, w)
    _sync(config.device)
    return (config.iterations - warmup) * b / (time.perf_counter() - start)


def sampler_rate(trainer: Trainer, config: TrainConfig, batches: int) -> float:
    """Tiles per second of the data pipeline alone (sampling, augmentation, targets, weights)."""
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(batches):
        trainer._sampler.batch(rng, config.batch_size)
    return batches * config.batch_size / (time.perf_counter() - start)


def _sync(device: str) -> None:
    if torch.cuda.is_available() and str(resolve_device(device)).startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=1024, help="synthetic image edge, px")
    parser.add_argument("--tile", type=int, default=128, help="network input tile edge, px")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--label-mode", default="instance", choices=["semantic", "instance"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-prefetch", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    image, instances = synthetic_pair(args.image_size)
    labels = instances if args.label_mode == "instance" else (instances > 0).astype(np.uint8)
    config = TrainConfig(
        label_mode=args.label_mode,
        iterations=args.steps + args.warmup,
        tile_shape=(args.tile, args.tile),
        batch_size=args.batch,
        network=NetworkSpec(base_channels=args.base_channels, depth=args.depth),
        validation_fraction=0.0,
        device=args.device,
        prefetch=not args.no_prefetch,
    )
    full, trainer = pipeline_rate(image, labels, config, args.warmup)
    bare = bare_rate(trainer, config, args.warmup)
    data = sampler_rate(trainer, config, max(3, args.steps // 3))
    device = resolve_device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"device: {device} ({name})")
    print(
        f"tiles {args.tile}x{args.tile}, batch {args.batch}, U-Net depth {args.depth} base "
        f"{args.base_channels}, {args.label_mode} labels, prefetch {'off' if args.no_prefetch else 'on'}, "
        f"{args.steps} timed steps"
    )
    print(f"full pipeline      : {full:8.1f} tiles/s")
    print(f"bare fwd+bwd loop  : {bare:8.1f} tiles/s")
    print(f"data pipeline alone: {data:8.1f} tiles/s (sampling, augmentation, targets, weights)")
    print(f"ratio full / bare  : {full / bare:8.2f}")


if __name__ == "__main__":
    main()
