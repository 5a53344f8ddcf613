"""Cross-domain evaluation, leave one source out: U-Net versus Otsu + distance watershed.

For every annotated nuclei source (HeLa crops, the DSB 2018 image, CHO slices, synthetic touching
nuclei) a U-Net is trained on all the *other* sources and scored on the left-out one, beside the
classical baseline (Gaussian, Otsu, distance-transform watershed) whose two parameters are tuned
on the same training sources. Scores: object F1 at IoU >= 0.5 and the DSB 2018 average precision
``TP / (TP + FP + FN)`` averaged over IoU thresholds 0.5, 0.55, ..., 0.95; both the mean over a
source's images. The bundled model (``sample_data/default_model.pt``) is scored on every source
as it is. Optionally (``--hela-ablation``) two HeLa-only models, with and without appearance and
scale augmentation, are scored on HeLa eval/ (to choose the augmentation default) and
(``--all-sources OUT``) a model trained on every source is written and scored.

HeLa trains on ``sample_data/train/`` and is scored on ``sample_data/eval/`` only, as the bundled
model is. The other sources train and are scored on the same images: leaving a source out
means it is never seen. Synthetic training and evaluation images come from different seeds.

The defaults are the bundled model's recipe (1200 steps of 4 tiles of 256 px, base 16, depth 4,
appearance and 0.5-2x scale augmentation, 16 synthetic training images, the last model).
``--validate-every N`` instead validates every N steps on held-out images of the training
sources only (:func:`validation_split`: the last HeLa crop, the last CHO plane, the right half
of the DSB image, whichever are training sources, and one generated image of its own seed) and
keeps the model with the best object F1, so the step count is chosen without looking at the
left-out source (the second run in ``benchmarks/results/crossdomain_eval.md``). On a 2-core CPU the
folds run two at a time with one torch thread each, then one report from their results (with
``--save-models``, ``--merge`` scores every fold's model again, also with ``diameter="auto"``)::

    python benchmarks/crossdomain_eval.py --only HeLa DSB2018 --threads 1 --no-bundled \\
        --save-models folds --json a.json &
    python benchmarks/crossdomain_eval.py --only CHO synthetic --threads 1 \\
        --save-models folds --json b.json
    python benchmarks/crossdomain_eval.py --merge a.json b.json --save-models folds \\
        --report benchmarks/results/crossdomain_eval.md

``--default-model OUT`` trains the recipe on every source but :data:`RESERVED` (DSB 2018, the
project's independent test image) and writes the bundled model (``train_default_model.sh``).
``--smoke`` runs every step at a toy budget (a few iterations, one image per source).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_otsu_watershed import (
    SAMPLE_DATA,
    load_pairs,
    segment_otsu_watershed,
    tune,
)

from napari_tiled_unet.metrics import match_objects

Pair = tuple[np.ndarray, np.ndarray]
AP_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))
# Baseline grid: the HeLa script's plus the larger seed distances big nuclei (CHO) need.
SIGMAS = (1.0, 2.0, 3.0)
MIN_DISTANCES = (5, 7, 9, 11, 13, 15, 17, 21, 25, 31)
BUNDLED_MODEL = SAMPLE_DATA / "default_model.pt"
RESERVED = "DSB2018"
"""The source the default model never trains on: the project's independent test (README, Data)."""
log = logging.getLogger("crossdomain")


@dataclasses.dataclass
class Source:
    """One annotated source: images to train on and images to score on when it is left out."""

    name: str
    train: list[Pair]
    eval: list[Pair]
    note: str


def average_precision(true: np.ndarray, pred: np.ndarray) -> float:
    """DSB 2018 average precision: mean over IoU thresholds 0.5..0.95 of TP / (TP + FP + FN),
    matching objects one-to-one with :func:`napari_tiled_unet.metrics.match_objects`."""
    values = []
    for threshold in AP_THRESHOLDS:
        m = match_objects(true, pred, float(threshold))
        total = m.true_positives + m.false_positives + m.false_negatives
        values.append(m.true_positives / total if total else 1.0)
    return float(np.mean(values))


def score(segment: Callable[[np.ndarray], np.ndarray], pairs: Sequence[Pair]) -> dict[str, float]:
    """Mean object F1 @ IoU 0.5 and mean DSB average precision of ``segment`` over ``pairs``."""
    f1, ap = [], []
    for image, labels in pairs:
        pred = np.asarray(segment(image))
        f1.append(match_objects(labels, pred, 0.5).f1)
        ap.append(average_precision(labels, pred))
    return {"f1": float(np.mean(f1)), "ap": float(np.mean(ap)), "images": len(pairs)}


def load_sources(smoke: bool, synthetic_train: int = 6, synthetic_dim: float = 0.0) -> list[Source]:
    """HeLa, DSB 2018, CHO and synthetic sources (see the module docstring); ``synthetic_train``
    generated images (seed 1) to train on, a ``synthetic_dim`` share of their nuclei dimmed
    (``synthetic_nuclei(..., dim_share=...)``), and 4 (seed 2, none dimmed) to score on."""
    from napari_tiled_unet.training.synthetic import synthetic_nuclei_set

    _, hela_train = load_pairs(SAMPLE_DATA / "train")
    _, hela_eval = load_pairs(SAMPLE_DATA / "eval")
    sources = [
        Source("HeLa", hela_train, hela_eval, "CTC Fluo-N2DL-HeLa crops: train/ (6) / eval/ (3)")
    ]
    sources.extend(_real_sources())
    synthetic_train = synthetic_nuclei_set(
        2 if smoke else synthetic_train, (256, 256), seed=1, dim_share=synthetic_dim
    )
    synthetic_eval = synthetic_nuclei_set(1 if smoke else 4, (256, 256), seed=2)
    sources.append(
        Source(
            "synthetic",
            synthetic_train,
            synthetic_eval,
            f"training.synthetic.synthetic_nuclei_set: {len(synthetic_train)} images seed 1 "
            f"(train; dim share {synthetic_dim:g}), 4 seed 2 (eval)",
        )
    )
    if smoke:
        for s in sources:
            s.train, s.eval = s.train[:1], s.eval[:1]
    return sources


def _real_sources() -> list[Source]:
    """The DSB 2018 image and the CHO planes shipped under ``sample_data/sources/``."""
    out = []
    for name, folder, note in (
        ("DSB2018", "dsb2018", "stardist's DSB 2018 image, 512x512, 125 nuclei (1 image)"),
        ("CHO", "cho", "CTC Fluo-N3DH-CHO 02 plane z=1, t=0,4,8,12,16 (5 images, ~70 px nuclei)"),
    ):
        _, pairs = load_pairs(SAMPLE_DATA / "sources" / folder)
        out.append(Source(name, pairs, pairs, note))
    return out


def model_probe_parser(doc: str, nargs: str = "+") -> argparse.ArgumentParser:
    """The arguments of the probes that score model files on these sources: the files,
    ``--json`` and ``--threads``; ``doc``'s first paragraph describes the probe."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("models", nargs=nargs, type=Path, help="model files to score")
    parser.add_argument("--json", type=Path, help="write the scores here")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser


def validation_split(source: Source) -> tuple[list[Pair], list[Pair]]:
    """The pairs of a training source to train on and to validate on.

    Synthetic: every training image, plus one generated image of seed 3 (neither the training
    nor the evaluation seed) to validate on. A source with several images: its last one is held
    out. A single image (DSB 2018): its right half is held out (objects cut by the split are
    partial objects in both halves, as at any image border).
    """
    if source.name == "synthetic":
        from napari_tiled_unet.training.synthetic import synthetic_nuclei_set

        return source.train, synthetic_nuclei_set(1, source.train[0][0].shape, seed=3)
    if len(source.train) > 1:
        return source.train[:-1], source.train[-1:]
    image, labels = source.train[0]
    half = image.shape[1] // 2
    return [(image[:, :half].copy(), labels[:, :half].copy())], [
        (image[:, half:].copy(), labels[:, half:].copy())
    ]


def balanced(
    sources: Sequence[Source], validate: bool = False
) -> tuple[list[np.ndarray], list[np.ndarray], list[Pair]]:
    """Training images and labels of ``sources``, each source repeated so that every source
    offers about the same number of pixels (the sampler draws tiles in proportion to area),
    and the validation pairs (with ``validate``: :func:`validation_split`'s, else none)."""
    parts = [validation_split(s) if validate else (s.train, []) for s in sources]
    areas = [sum(p[0].size for p in fit) for fit, _ in parts]
    images, labels, validation = [], [], []
    for (fit, held), area in zip(parts, areas, strict=True):
        repeat = max(1, round(max(areas) / area))
        for _ in range(repeat):
            for image, lab in fit:
                images.append(image)
                labels.append(lab)
        validation.extend(held)
    return images, labels, validation


def train_model(sources: Sequence[Source], args: argparse.Namespace, augment: bool):
    """A U-Net trained on ``sources`` at the budget in ``args``: with ``args.validate_every``,
    the model of the best validation object F1 on :func:`validation_split`'s held-out pairs
    (its validation curve in ``model.info.training["validation_curve"]``), else the last one."""
    from napari_tiled_unet.training import AugmentSpec, NetworkSpec, TrainConfig, Trainer

    validate = args.validate_every > 0
    images, labels, validation = balanced(sources, validate)
    config = TrainConfig(
        label_mode="instance",
        iterations=args.iterations,
        tile_shape=(args.tile, args.tile),
        batch_size=args.batch,
        network=NetworkSpec(base_channels=args.base, depth=4),
        w0=args.w0,
        ema_decay=getattr(args, "ema_decay", 0.0),
        validation_fraction=0.0,  # held-out blocks of repeated images would leak
        validation_every=max(args.validate_every, 1),
        best_metric="val_object_f1",
        seed=args.seed,
        device="cpu",
        prefetch=False,
        augment=AugmentSpec(
            appearance=augment,
            scale=2.0 if augment else 1.0,
            dimming=getattr(args, "dimming", 1.0) if augment else 1.0,
        ),
    )
    trainer = Trainer(images, labels, config, validation=validation or None)
    model = trainer.run()
    if validate:
        curve = [
            [h["step"], round(h["val_object_f1"], 4)]
            for h in trainer.history
            if "val_object_f1" in h
        ]
        log.info("validation object F1 by step: %s (best step %s)", curve, trainer.best_step)
        model.info = dataclasses.replace(
            model.info, training={**(model.info.training or {}), "validation_curve": curve}
        )
    return model


def train_default_model(sources: Sequence[Source], args: argparse.Namespace, out: Path):
    """The default model's recipe on ``sources``, written to ``out`` with what it saw."""
    model = train_model(sources, args, augment=True)
    record_default_model(model, sources, out)
    return model


def record_default_model(model, sources: Sequence[Source], out: Path) -> None:
    """Write ``model`` to ``out`` with a note of the ``sources`` it was trained on."""
    from napari_tiled_unet.model.modelfile import save_model

    validate = (model.info.training or {}).get("validation") == "held-out images"
    seen = ", ".join(
        f"{s.name} ({len(validation_split(s)[0]) if validate else len(s.train)} images)"
        for s in sources
    )
    training = dict(model.info.training or {})
    training["data"] = (
        f"{seen}; each source repeated to about the same area"
        f"{'; validated on held-out images of the same sources' if validate else ''}; made by "
        "benchmarks/train_default_model.sh (benchmarks/crossdomain_eval.py --default-model)"
    )
    model.info = dataclasses.replace(model.info, training=training)
    save_model(model, out)


def default_training_set(synthetic_train: int = 16) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The images and labels the default model's recipe trains on (what ``balanced`` gives for
    every source but :data:`RESERVED`, nothing held out for validation)."""
    sources = load_sources(smoke=False, synthetic_train=synthetic_train)
    images, labels, _ = balanced([s for s in sources if s.name != RESERVED])
    return images, labels


def unet_segment(model, diameter: str | None = None) -> Callable[[np.ndarray], np.ndarray]:
    from napari_tiled_unet import predict

    return lambda image: predict(image, model, output="instances", device="cpu", diameter=diameter)


def rescore(results: dict, folder: Path) -> dict:
    """Score each fold again, with and without ``diameter="auto"`` and with the separation
    settings of the training median (no per-image object size), with the models
    ``--save-models`` wrote to ``folder`` (``without_NAME.pt``) and this version's prediction;
    folds without a model file are left as they are."""
    from napari_tiled_unet import load_model

    budget = results["budget"]
    for held in load_sources(budget.get("smoke", False), budget.get("synthetic_train", 6)):
        path = folder / f"without_{held.name}.pt"
        if held.name in results["folds"] and path.exists():
            fold = results["folds"][held.name]
            model = load_model(path)
            fold["unet"] = score(unet_segment(model), held.eval)
            fold["unet_auto"] = score(unet_segment(model, "auto"), held.eval)
            fixed = load_model(path)  # separation at the training median, as before the range
            fixed.info = fixed.info.replace(object_diameter_range=None)
            fold["unet_fixed_size"] = score(unet_segment(fixed), held.eval)
            log.info(
                "fold %s: U-Net %s, diameter auto %s", held.name, fold["unet"], fold["unet_auto"]
            )
    return results


def score_model_file(path: Path, budget: dict) -> dict:
    """A model file's scores on every source (what the report's second table shows)."""
    from napari_tiled_unet import load_model

    sources = load_sources(budget.get("smoke", False), budget.get("synthetic_train", 6))
    segment = unet_segment(load_model(path))
    scores = {s.name: score(segment, s.eval) for s in sources}
    log.info("%s: %s", path, scores)
    return {"budget": f"{path.name} as it is", "scores": scores}


def baseline_segment(sigma: float, min_distance: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda image: segment_otsu_watershed(image, sigma, min_distance)


def run(args: argparse.Namespace) -> dict:
    sources = load_sources(args.smoke, args.synthetic_train, args.synthetic_dim)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results: dict = {"budget": vars(args).copy(), "sources": {}, "folds": {}, "extra": {}}
    results["budget"].pop("report", None)
    for s in sources:
        results["sources"][s.name] = {
            "note": s.note,
            "train_images": len(s.train),
            "eval_images": len(s.eval),
        }
    save = json_saver(args.json)

    if not args.no_folds and not args.no_bundled:
        log.info("bundled model on every source")
        bundled = unet_segment(str(BUNDLED_MODEL))
        results["bundled"] = {s.name: score(bundled, s.eval) for s in sources}
        save(results)
    folds = [s for s in sources if not args.only or s.name in args.only]
    for held in [] if args.no_folds else folds:
        rest = [s for s in sources if s is not held]
        start = time.perf_counter()
        sigma, min_distance, tuned = tune([s.train for s in rest], SIGMAS, MIN_DISTANCES, log=None)
        fold = {
            "baseline_params": {"sigma": sigma, "min_distance": min_distance, "train_f1": tuned},
            "baseline": score(baseline_segment(sigma, min_distance), held.eval),
        }
        log.info(
            "fold %s: baseline %s (%.0f s)",
            held.name,
            fold["baseline"],
            time.perf_counter() - start,
        )
        start = time.perf_counter()
        model = train_model(rest, args, augment=True)
        fold["train_seconds"] = time.perf_counter() - start
        if args.save_models is not None:  # first: scoring must not lose the training
            from napari_tiled_unet.model.modelfile import save_model

            args.save_models.mkdir(parents=True, exist_ok=True)
            save_model(model, args.save_models / f"without_{held.name}.pt")
        fold["unet"] = score(unet_segment(model), held.eval)
        log.info("fold %s: U-Net %s (%.0f s)", held.name, fold["unet"], fold["train_seconds"])
        results["folds"][held.name] = fold
        save(results)

    if args.hela_ablation:
        hela = [s for s in sources if s.name == "HeLa"]
        for augment in (False, True):
            model = train_model(hela, args, augment=augment)
            key = f"HeLa only, appearance + scale augmentation {'on' if augment else 'off'}"
            segment = unet_segment(model)
            scores = {s.name: score(segment, s.eval) for s in sources}
            results["extra"][key] = {"budget": _budget(args, augment), "scores": scores}
            log.info("%s: %s", key, scores)
            save(results)

    if args.default_model:
        trained_on = [s for s in sources if s.name != RESERVED]
        model = train_default_model(trained_on, args, args.default_model)
        segment = unet_segment(model)
        scores = {s.name: score(segment, s.eval) for s in sources}
        results["extra"][f"default model (trained without {RESERVED})"] = {
            "budget": _budget(args, True),
            "scores": scores,
        }
        log.info("default model: %s", scores)
        save(results)

    if args.all_sources:
        from napari_tiled_unet.model.modelfile import save_model

        model = train_model(sources, args, augment=True)
        save_model(model, args.all_sources)
        segment = unet_segment(model)
        scores = {s.name: score(segment, s.eval) for s in sources}
        results["extra"]["all sources (in-sample except HeLa eval and synthetic eval)"] = {
            "budget": _budget(args, True),
            "scores": scores,
        }
        log.info("all sources: %s", scores)
        save(results)
    return results


def json_saver(path: Path | None) -> Callable[[dict], None]:
    """``save(results)`` writes ``results`` as JSON to ``path`` (None: does nothing); the
    benchmarks call it after every step, so an interrupted run keeps what it measured."""

    def save(results: dict) -> None:
        if path is not None:
            path.write_text(json.dumps(results, indent=1, default=str) + "\n")

    return save


def report(results: dict) -> str:
    """The results as a markdown table (what benchmarks/results/crossdomain_eval.md holds)."""
    b = results["budget"]
    lines = [
        "| left-out source | images | baseline F1 | U-Net F1 | U-Net F1, diameter auto "
        "| U-Net F1, training-median separation | baseline AP | U-Net AP | bundled F1 "
        "| bundled AP | baseline params (tuned on the rest) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    f1_gain = []
    for name, fold in results["folds"].items():
        base, unet, auto = fold["baseline"], fold["unet"], fold.get("unet_auto")
        fixed = fold.get("unet_fixed_size")
        bundled = results.get("bundled", {}).get(name)
        bundled_cells = f"{bundled['f1']:.3f} | {bundled['ap']:.3f}" if bundled else "- | -"
        params = fold["baseline_params"]
        f1_gain.append(unet["f1"] - base["f1"])
        lines.append(
            f"| {name} | {unet['images']} | {base['f1']:.3f} | {unet['f1']:.3f} "
            f"| {format(auto['f1'], '.3f') if auto else '-'} "
            f"| {format(fixed['f1'], '.3f') if fixed else '-'} "
            f"| {base['ap']:.3f} | {unet['ap']:.3f} | {bundled_cells} "
            f"| sigma {params['sigma']:g}, min_distance {params['min_distance']} |"
        )
    if f1_gain:
        beaten = sum(g > 0 for g in f1_gain)
        lines.append(
            f"\nMean U-Net minus baseline F1 over left-out sources: {np.mean(f1_gain):+.3f}; "
            f"the U-Net beats the baseline on {beaten} of {len(f1_gain)} left-out sources "
            "(issue 17's target: on every one, and by >= 0.1 on average)."
        )
    if results["extra"]:
        names = list(results["sources"])
        lines += [
            "",
            "| model | budget | " + " | ".join(f"{n} F1 / AP" for n in names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for key, entry in results["extra"].items():
            cells = [
                f"{entry['scores'][n]['f1']:.3f} / {entry['scores'][n]['ap']:.3f}" for n in names
            ]
            lines.append(f"| {key} | {entry['budget']} | " + " | ".join(cells) + " |")
    return "Folds: " + _budget(argparse.Namespace(**b), True) + "\n\n" + "\n".join(lines) + "\n"


def _budget(args: argparse.Namespace, augment: bool) -> str:
    every = getattr(args, "validate_every", 0)
    selection = (
        f"best validation object F1 (every {every} steps, held-out images of the training sources)"
        if every
        else "validation off (last model)"
    )
    dim = getattr(args, "synthetic_dim", 0.0)
    dimmed = f"{dim:g} of the synthetic training nuclei dimmed, " if dim else ""
    decay = getattr(args, "ema_decay", 0.0)
    averaged = f"weight EMA {decay:g}, " if decay else ""
    factor = getattr(args, "dimming", 1.0)
    dimming = f"tiles dimmed down to 1/{factor:g}, " if factor > 1 else ""
    return (
        f"{args.iterations} iterations, tile {args.tile}, batch {args.batch}, base channels "
        f"{args.base}, depth 4, w0 {getattr(args, 'w0', 10.0):g}, CPU, "
        f"seed {getattr(args, 'seed', 0)}, appearance + scale (0.5-2x) augmentation "
        f"{'on' if augment else 'off'}, {dimmed}{dimming}{averaged}{selection}"
    )


def merge(paths: Sequence[Path]) -> dict:
    """Results of several runs (e.g. the folds, then the ablation) as one."""
    merged: dict = {"folds": {}, "extra": {}, "bundled": {}, "sources": {}}
    for path in paths:
        part = json.loads(Path(path).read_text())
        if part.get("folds"):
            merged["budget"] = part["budget"]
        for key in ("folds", "extra", "bundled", "sources"):
            merged[key].update(part.get(key, {}))
    merged.setdefault("budget", json.loads(Path(paths[0]).read_text())["budget"])
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=1200)
    parser.add_argument(
        "--validate-every",
        type=int,
        default=0,
        help="validate on held-out images of the training sources every this many steps and "
        "keep the best model (0: no validation, the last model of all the images)",
    )
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--base", type=int, default=16, help="base channels of the U-Net")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every fold")
    parser.add_argument("--w0", type=float, default=10.0, help="border weight of the loss")
    parser.add_argument(
        "--ema-decay", type=float, default=0.0, help="weight average's decay (0: last weights)"
    )
    parser.add_argument(
        "--dimming",
        type=float,
        default=1.0,
        help="augmentation: dim tiles by up to this factor (AugmentSpec.dimming; 1: off)",
    )
    parser.add_argument("--hela-ablation", action="store_true")
    parser.add_argument("--all-sources", type=Path, help="write a model trained on all sources")
    parser.add_argument(
        "--default-model",
        type=Path,
        help=f"write the default model: the recipe on every source but {RESERVED}",
    )
    parser.add_argument("--json", type=Path, help="write results here after every step")
    parser.add_argument("--report", type=Path, help="write the markdown table here")
    parser.add_argument("--smoke", action="store_true", help="toy budget, one image per source")
    parser.add_argument("--no-folds", action="store_true", help="skip bundled model and folds")
    parser.add_argument("--merge", type=Path, nargs="+", help="only report these JSON results")
    parser.add_argument("--only", nargs="+", help="run only the folds leaving out these sources")
    parser.add_argument(
        "--score-model",
        nargs=2,
        action="append",
        metavar=("LABEL", "PATH"),
        help="with --merge: also score this model file on every source",
    )
    parser.add_argument("--no-bundled", action="store_true", help="do not score the bundled model")
    parser.add_argument("--threads", type=int, help="torch CPU threads (parallel runs: 1 each)")
    parser.add_argument("--synthetic-train", type=int, default=16, help="synthetic training images")
    parser.add_argument(
        "--synthetic-dim",
        type=float,
        default=0.0,
        help="share of the synthetic training images' nuclei that are dimmed",
    )
    parser.add_argument("--save-models", type=Path, help="write each fold's model to this folder")
    args = parser.parse_args(argv)
    if args.merge:
        merged = merge(args.merge)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        if args.save_models is not None:
            merged = rescore(merged, args.save_models)
        for label, path in args.score_model or ():
            merged["extra"][label] = score_model_file(Path(path), merged["budget"])
        text = report(merged)
        print(text)
        if args.report is not None:
            args.report.write_text(text)
        return 0
    if args.smoke:
        args.iterations, args.tile, args.batch, args.base = 2, 64, 1, 4
        args.validate_every = min(args.validate_every, 1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = run(args)
    text = report(results)
    print(text)
    if args.report is not None:
        args.report.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
