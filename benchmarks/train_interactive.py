"""Wall time for a training preset to reach an object F1 on the bundled evaluation crops.

Trains on ``sample_data/train/`` (instance labels; the run's own validation holds out 10 % of
the training blocks and picks the kept model, as in any run) and, every ``--every`` steps,
scores the kept model (:attr:`Trainer.best_model`, what Stop or Save would give) on the
held-out ``sample_data/eval/`` crops by object F1 at IoU >= 0.5 — the scorer of
``benchmarks/baseline_otsu_watershed.py``. Only training time counts: the clock stops while
the evaluation crops are scored. Stops when the target is reached or at ``--minutes``.

Usage::

    python benchmarks/train_interactive.py                        # interactive preset, 45 min cap
    python benchmarks/train_interactive.py --preset default --minutes 60 --target 0.85
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_otsu_watershed import SAMPLE_DATA, load_pairs, object_f1

from napari_tiled_unet import predict
from napari_tiled_unet.training import TrainConfig, Trainer
from napari_tiled_unet.training.presets import PRESET_NAMES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="interactive", choices=PRESET_NAMES)
    parser.add_argument("--target", type=float, default=0.85, help="object F1 to reach")
    parser.add_argument("--minutes", type=float, default=45.0, help="training time cap")
    parser.add_argument("--every", type=int, default=50, help="steps between evaluations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    _, train_pairs = load_pairs(SAMPLE_DATA / "train")
    _, eval_pairs = load_pairs(SAMPLE_DATA / "eval")
    config = TrainConfig.preset(
        args.preset,
        label_mode="instance",
        iterations=10**6,
        validation_every=args.every,
        seed=args.seed,
        device=args.device,
    )
    net = config.network
    print(
        f"preset {args.preset}: base {net.base_channels} depth {net.depth} tile "
        f"{config.tile_shape} batch {config.batch_size}; {os.cpu_count()} cores, torch "
        f"{torch.get_num_threads()} threads; load average {os.getloadavg()}",
        flush=True,
    )
    print(f"config: {dataclasses.asdict(config)}", flush=True)
    trainer = Trainer([p[0] for p in train_pairs], [p[1] for p in train_pairs], config)
    events = trainer.iter_run()
    next(events)  # data scanned, validation chosen: the clock starts at the first step
    trained = 0.0
    reached = None
    print("| minutes of training | steps | kept at step | object F1 (eval) | load avg |")
    print("|---|---|---|---|---|", flush=True)
    try:
        while trained < args.minutes * 60:
            start = time.perf_counter()
            for _ in range(args.every):
                next(events)
            trained += time.perf_counter() - start
            model = trainer.best_model
            scores = [
                object_f1(labels, np.asarray(predict(image, model, output="instances")))
                for image, labels in eval_pairs
            ]
            f1 = float(np.mean(scores))
            print(
                f"| {trained / 60:.1f} | {trainer.step} | {trainer.best_step} | {f1:.3f} "
                f"({', '.join(f'{s:.3f}' for s in scores)}) | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
            if f1 >= args.target:
                reached = (trained, trainer.step, f1)
                break
    finally:
        events.close()
    if reached:
        print(
            f"reached object F1 {reached[2]:.3f} >= {args.target} after {reached[0] / 60:.1f} min "
            f"of training ({reached[1]} steps)"
        )
    else:
        print(f"did not reach object F1 {args.target} in {args.minutes} min ({trainer.step} steps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
