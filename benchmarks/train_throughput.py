"""Training throughput of the full pipeline versus a bare forward + backward loop, interleaved.

The full pipeline is :class:`napari_tiled_unet.training.Trainer`: lazy tile sampling
(foreground-aware), augmentation (flips, rotations, elastic deformation, intensity jitter),
instance targets, the paper's weight map, the loss and the optimizer step. The bare loop runs
the engine's own step (:func:`~napari_tiled_unet.training.optim.train_step`) on the same
network, loss and optimizer, cycling through a few batches the same sampler drew in advance:
the data pipeline is all it leaves out. Their ratio is what the data pipeline costs: 1.0 means
it is free.

Every variant is a running step generator; the benchmark runs them in short segments, round
after round, in alternating order (A B C, C B A, ...), so a change of machine load between
rounds hits every variant alike. The first step of each segment is not timed (it absorbs
whatever the previous variant left running, e.g. a prefetch thread finishing its batch).
Ratios are taken within a round and reported as median [min - max] over rounds. Validation
is off. Not a test: it prints numbers (and a markdown table with ``--markdown``).

Variants (``--variants``, comma-separated; ``@N`` runs it with ``torch.set_num_threads(N)``):

- ``bare``: the engine's step on pre-drawn batches, as the run would prepare its model.
- ``bare-contiguous``: the same with the model kept in the default (NCHW) memory format.
- ``run``: ``Trainer`` as configured (``TrainConfig.prefetch`` "auto").
- ``serial``: ``Trainer`` with ``prefetch=False`` (batches drawn between steps).
- ``thread``: ``Trainer`` with ``prefetch=True`` (next batch drawn in a background thread).
- ``data``: the sampler alone (reported as batches/s, no ratio).

Usage::

    python benchmarks/train_throughput.py                                  # presets, sample crops
    python benchmarks/train_throughput.py --preset interactive --variants bare,run,thread@1
    python benchmarks/train_throughput.py --net 16,3,192,4 --rounds 8 --data synthetic
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from napari_tiled_unet.device import resolve_device
from napari_tiled_unet.model.unet import UNet
from napari_tiled_unet.training import NetworkSpec, TrainConfig, Trainer
from napari_tiled_unet.training.loss import make_loss
from napari_tiled_unet.training.optim import grad_scaler, make_optimizer, train_step

SAMPLE_TRAIN = Path(__file__).resolve().parents[1] / "src/napari_tiled_unet/sample_data/train"


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


def sample_pairs() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The bundled training crops and their instance masks."""
    import tifffile

    labels = sorted(glob.glob(str(SAMPLE_TRAIN / "*_labels.tif")))
    return (
        [tifffile.imread(p.replace("_labels.tif", ".tif")) for p in labels],
        [tifffile.imread(p) for p in labels],
    )


def trainer_steps(images, labels, config: TrainConfig) -> tuple[Iterator, Trainer]:
    """A started Trainer's event generator (data scanned, no step taken) and the Trainer."""
    trainer = Trainer(images, labels, config)
    events = trainer.iter_run()
    next(events)
    return events, trainer


def bare_steps(trainer: Trainer, config: TrainConfig, contiguous: bool = False) -> Iterator:
    """The engine's step, forever, on 4 batches the trainer's sampler drew in advance."""
    from napari_tiled_unet.training import step as fast

    device = resolve_device(config.device)
    plan = fast.StepPlan.for_run(config, device)
    if contiguous:
        plan = dataclasses.replace(plan, channels_last=False)
    model = plan.prepare_model(UNet.from_config(trainer.best_model.config)).train()
    optimizer = make_optimizer(model, config)
    scaler = grad_scaler() if plan.amp else None
    loss_fn = make_loss(config.loss)
    rng = np.random.default_rng(1)
    batches = [trainer._sampler.batch(rng, config.batch_size) for _ in range(4)]
    k = 0
    while True:
        train_step(model, optimizer, scaler, loss_fn, device, plan.amp, *batches[k % 4])
        k += 1
        yield k


def data_steps(trainer: Trainer, config: TrainConfig) -> Iterator:
    """The data pipeline alone: one batch per step."""
    rng = np.random.default_rng(2)
    while True:
        yield trainer._sampler.batch(rng, config.batch_size)


def _sync(device: str) -> None:
    if torch.cuda.is_available() and str(resolve_device(device)).startswith("cuda"):
        torch.cuda.synchronize()


def measure(
    variants: dict[str, tuple[Callable[[], object], int]],
    rounds: int,
    segment: int,
    device: str,
) -> dict[str, list[float]]:
    """Seconds per step of each variant, one entry per round (mean over a segment)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    default_threads = torch.get_num_threads()
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            step, threads = variants[name]
            torch.set_num_threads(threads or default_threads)
            step()  # untimed: absorbs what the previous variant left running
            _sync(device)
            start = time.perf_counter()
            for _ in range(segment):
                step()
            _sync(device)
            times[name].append((time.perf_counter() - start) / segment)
        print(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(f"{n} {t[-1]:.3f}s" for n, t in times.items()),
            flush=True,
        )
    torch.set_num_threads(default_threads)
    return times


def summarise(times: dict[str, list[float]], reference: str) -> list[tuple[str, float, str]]:
    """(variant, median s/step, 'ratio median [min-max] (vs what)').

    The ratio is the variant's throughput over ``reference``'s in the same round; a variant run
    with ``@N`` threads is compared with ``reference@N`` when that was measured too.
    """
    rows = []
    for name, t in times.items():
        threads = name.partition("@")[2]
        versus = (
            f"{reference}@{threads}" if threads and f"{reference}@{threads}" in times else reference
        )
        if name == versus or name.startswith("data"):
            ratio = "-"
        else:
            ratios = [b / v for b, v in zip(times[versus], t, strict=True)]
            ratio = (
                f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}] vs {versus}"
            )
        rows.append((name, statistics.median(t), ratio))
    return rows


def _measured(preset: TrainConfig, device: str) -> TrainConfig:
    """``preset`` as the benchmark runs it: instance labels, no validation, seed 0."""
    return dataclasses.replace(
        preset,
        label_mode="instance",
        iterations=10**6,
        validation_fraction=0.0,
        device=device,
        seed=0,
    )


def build_variants(
    config: TrainConfig, specs: list[str], images, labels, generators: list
) -> dict[str, tuple[Callable[[], object], int]]:
    """The step callables of ``specs`` (e.g. ``"bare"``, ``"run@1"``) for ``config``, each with
    its torch thread count (0: default); the generators made are appended to ``generators``."""
    variants = {}
    probe_events, probe = trainer_steps(images, labels, config)
    generators.append(probe_events)
    next(probe_events)  # one step, so that best_model exists
    for spec in specs:
        kind, _, threads = spec.partition("@")
        if kind in ("run", "serial", "thread"):
            prefetch = {"run": config.prefetch, "serial": False, "thread": True}[kind]
            gen, _ = trainer_steps(images, labels, dataclasses.replace(config, prefetch=prefetch))
        elif kind in ("bare", "bare-contiguous"):
            gen = bare_steps(probe, config, contiguous=kind == "bare-contiguous")
        elif kind == "data":
            gen = data_steps(probe, config)
        else:
            raise SystemExit(f"unknown variant {kind!r}")
        generators.append(gen)
        variants[spec] = (gen.__next__, int(threads) if threads else 0)
    return variants


def parse_net(text: str) -> tuple[int, int, int, int]:
    base, depth, tile, batch = (int(v) for v in text.split(","))
    return base, depth, tile, batch


def main(argv: list[str] | None = None) -> None:
    from napari_tiled_unet.training.presets import PRESETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        action="append",
        choices=sorted(PRESETS),
        help="a training preset to measure (repeat; default: all presets unless --net is given)",
    )
    parser.add_argument(
        "--net",
        action="append",
        type=parse_net,
        default=[],
        metavar="BASE,DEPTH,TILE,BATCH",
        help="another network to measure, e.g. 16,3,192,4 (repeat)",
    )
    parser.add_argument("--variants", default="bare,run,serial,thread,data")
    parser.add_argument("--reference", default="bare", help="variant the ratios divide by")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--segment", type=int, default=3, help="timed steps per segment")
    parser.add_argument("--data", default="sample", choices=["sample", "synthetic"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="interleave all presets' variants in the same rounds (and compare their step rates)",
    )
    args = parser.parse_args(argv)

    if args.data == "sample":
        images, labels = sample_pairs()
    else:
        image, instances = synthetic_pair(1024)
        images, labels = [image], [instances]
    configs: list[tuple[str, TrainConfig]] = []
    for name in args.preset or ([] if args.net else sorted(PRESETS)):
        configs.append((name, TrainConfig.preset(name)))
    for base, depth, tile, batch in args.net:
        configs.append(
            (
                f"base {base} depth {depth} tile {tile} batch {batch}",
                TrainConfig(
                    tile_shape=(tile, tile),
                    batch_size=batch,
                    network=NetworkSpec(base_channels=base, depth=depth),
                ),
            )
        )
    device = resolve_device(args.device)
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {os.cpu_count()} cores, torch {torch.get_num_threads()} threads"
    )
    print(f"device: {device} ({where}); data: {args.data}; load average {os.getloadavg()}")
    table = []
    runs = [(title, _measured(preset, args.device)) for title, preset in configs]
    for title, config in runs:
        net = config.network
        print(
            f"{title}: base {net.base_channels} depth {net.depth} tile {config.tile_shape} "
            f"batch {config.batch_size}",
            flush=True,
        )
    groups = [runs] if args.side_by_side else [[run] for run in runs]
    for group in groups:
        variants: dict[str, tuple[Callable[[], object], int]] = {}
        generators: list = []
        try:
            for title, config in group:
                built = build_variants(config, args.variants.split(","), images, labels, generators)
                prefix = f"{title}: " if args.side_by_side else ""
                variants.update({prefix + name: v for name, v in built.items()})
            times = measure(variants, args.rounds, args.segment, args.device)
        finally:
            for gen in generators:
                gen.close()
        for title, _ in group:
            prefix = f"{title}: " if args.side_by_side else ""
            own = {k[len(prefix) :]: t for k, t in times.items() if k.startswith(prefix)}
            for name, median, ratio in summarise(own, args.reference):
                unit = "batches/s" if name.startswith("data") else "steps/s"
                print(f"  {title}: {name:18s} {1 / median:7.2f} {unit:9s} ratio: {ratio}")
                table.append((title, name, 1 / median, unit, ratio))
        if args.side_by_side and len(group) > 1:
            first = group[0][0]
            for title, _ in group[1:]:
                for name in args.variants.split(","):
                    ratios = [
                        b / a
                        for a, b in zip(
                            times[f"{first}: {name}"], times[f"{title}: {name}"], strict=True
                        )
                    ]
                    print(
                        f"  {name}: {first} steps/s over {title} steps/s, same rounds: "
                        f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"
                    )
    if args.markdown:
        print(
            "\n| preset | variant | rate (median) | throughput ratio, median [min-max] over rounds |"
        )
        print("|---|---|---|---|")
        for title, name, rate, unit, ratio in table:
            print(f"| {title} | {name} | {rate:.2f} {unit} | {ratio} |")


if __name__ == "__main__":
    main()
