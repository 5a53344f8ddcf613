"""Command line: ``napari-tiled-unet predict ...`` and ``napari-tiled-unet train ...``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from napari_tiled_unet.device import DEVICES

logger = logging.getLogger("napari_tiled_unet")


class CommandError(Exception):
    """A user error to report as one line on stderr."""


def _progress_bar(events, desc: str, postfix_keys: Sequence[str] = ()):
    """Drive a tqdm bar from engine Progress events; return the generator's result."""
    from tqdm import tqdm

    bar = None
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as stop:
                return stop.value
            if bar is None:
                bar = tqdm(
                    total=event.total, desc=desc, unit="tile" if event.stage == "predict" else "it"
                )
            bar.update(event.done - bar.n)
            shown = {k: f"{event.metrics[k]:.3g}" for k in postfix_keys if k in event.metrics}
            if shown:
                bar.set_postfix(shown, refresh=False)
    finally:
        events.close()
        if bar is not None:
            bar.close()


def _predict(args: argparse.Namespace) -> None:
    import numpy as np
    import tifffile

    from napari_tiled_unet.inference import iter_predict, resolve_model
    from napari_tiled_unet.io.atomic import atomic_path
    from napari_tiled_unet.io.tiff import open_tiff
    from napari_tiled_unet.model.modelfile import default_model_path

    inputs = [Path(args.input).resolve()]
    for out in (args.output, args.probabilities):
        if out is not None and Path(out).resolve() in inputs:
            raise CommandError(f"output {out} is the input file; choose another name")
    if args.model is None and not default_model_path().is_file():
        raise CommandError(
            f"no --model given and the bundled default model is missing ({default_model_path()})"
        )
    model = resolve_model(args.model)
    image = open_tiff(args.input)
    kind = args.kind
    if kind == "auto":
        kind = "instances" if model.metadata.get("label_mode") == "instance" else "labels"
    tile = None if args.tile is None else (args.tile,) * model.config.ndim
    name = f"input {args.input}"

    with contextlib.ExitStack() as stack:
        label_tmp = stack.enter_context(atomic_path(args.output))
        prob_tmp = (
            stack.enter_context(atomic_path(args.probabilities)) if args.probabilities else None
        )
        want_probs = prob_tmp is not None or kind == "instances"
        events = iter_predict(
            image,
            model,
            tile_shape=tile,
            batch_size=args.batch,
            device=args.device,
            output="probabilities" if want_probs else "labels",
            name=name,
        )
        result = _progress_bar(events, "predict")
        if want_probs:
            from napari_tiled_unet.postprocess import labels_from_probabilities

            labels = labels_from_probabilities(
                result, "instance" if kind == "instances" else "semantic"
            )
        else:
            labels = result
        tifffile.imwrite(label_tmp, np.asarray(labels), compression="zlib")
        if prob_tmp is not None:
            tifffile.imwrite(prob_tmp, result, compression="zlib", metadata={"axes": "CYX"})
    logger.info("wrote %s", args.output)


def _train(args: argparse.Namespace) -> None:
    from napari_tiled_unet.io.tiff import open_tiff
    from napari_tiled_unet.model.modelfile import save_model
    from napari_tiled_unet.training import TrainConfig, Trainer

    if len(args.image) != len(args.labels):
        raise CommandError(
            f"got {len(args.image)} --image and {len(args.labels)} --labels; give one --labels per --image"
        )
    if len(args.validation_image) != len(args.validation_labels):
        raise CommandError("give one --validation-labels per --validation-image")
    output = Path(args.output)
    if output.resolve() in {Path(p).resolve() for p in args.image + args.labels}:
        raise CommandError(f"output {output} is one of the inputs; choose another name")
    if not output.parent.is_dir():
        raise CommandError(f"output folder {output.parent} does not exist")
    options = dict(
        label_mode=args.mode,
        iterations=args.iterations,
        batch_size=args.batch,
        learning_rate=args.lr,
        optimizer=args.optimizer,
        seed=args.seed,
        device=args.device,
        base_channels=args.base_channels,
        depth=args.depth,
        padding=args.padding,
        validation_every=args.validate_every,
        elastic=not args.no_elastic,
    )
    if args.tile is not None:
        options["tile_shape"] = (args.tile, args.tile)
    config = TrainConfig(**options)
    images = [open_tiff(p) for p in args.image]
    labels = [open_tiff(p) for p in args.labels]
    validation = [
        (open_tiff(i), open_tiff(lab))
        for i, lab in zip(args.validation_image, args.validation_labels, strict=True)
    ] or None
    names = [f"pair {i + 1} ({Path(p).name})" for i, p in enumerate(args.image)]
    trainer = Trainer(images, labels, config, model=args.resume, names=names, validation=validation)
    try:
        _progress_bar(trainer.iter_run(), "train", ("loss", "val_iou", "val_f1"))
    except KeyboardInterrupt:
        if trainer.best_model is not None:
            save_model(trainer.best_model, output)
            print(
                f"napari-tiled-unet: interrupted; best model so far saved to {output}",
                file=sys.stderr,
            )
        raise
    save_model(trainer.best_model, output)
    scores = trainer.best_model.metadata.get("training", {}).get("best_scores", {})
    logger.warning("saved %s %s", output, " ".join(f"{k}={v:.3f}" for k, v in scores.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-tiled-unet",
        description="Overlap-tile U-Net segmentation: predict on images of any size, or train a model.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="segment a TIFF image with a model")
    p.add_argument("input", help="input TIFF (2D, or C,Y,X for multi-channel models)")
    p.add_argument("--model", help="model file (.pt); default: the bundled nuclei model")
    p.add_argument("--output", "-o", required=True, help="output labels TIFF")
    p.add_argument("--probabilities", help="also write class probabilities (C,Y,X float32) here")
    p.add_argument(
        "--tile", type=int, help="network input tile edge in pixels (default: about 512)"
    )
    p.add_argument("--batch", type=int, default=1, help="tiles per forward pass (default 1)")
    p.add_argument(
        "--device", choices=DEVICES, default="auto", help="default: auto (cuda, mps, cpu)"
    )
    p.add_argument(
        "--kind",
        choices=("auto", "labels", "instances"),
        default="auto",
        help="labels: class ids; instances: object ids; auto: instances for models trained on instance labels",
    )
    p.set_defaults(run=_predict)

    t = sub.add_parser("train", help="train a model from images and label images")
    t.add_argument(
        "--image", action="append", required=True, help="training image TIFF (repeat for more)"
    )
    t.add_argument(
        "--labels", action="append", required=True, help="label TIFF for the --image before it"
    )
    t.add_argument("--output", "-o", required=True, help="model file to write (.pt)")
    t.add_argument(
        "--mode",
        choices=("semantic", "instance", "sparse"),
        default="semantic",
        help="semantic: value = class; instance: value = object id; sparse: 0 = not annotated",
    )
    t.add_argument("--iterations", type=int, default=1000)
    t.add_argument("--tile", type=int, help="training tile edge in pixels (default 256)")
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    t.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    t.add_argument("--resume", help="fine-tune this model file instead of starting from scratch")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", choices=DEVICES, default="auto")
    t.add_argument("--base-channels", type=int, default=32)
    t.add_argument("--depth", type=int, default=4)
    t.add_argument("--padding", choices=("same", "valid"), default="same")
    t.add_argument("--validate-every", type=int, default=50)
    t.add_argument("--no-elastic", action="store_true", help="switch off elastic deformation")
    t.add_argument("--validation-image", action="append", default=[], help="held-out image TIFF")
    t.add_argument("--validation-labels", action="append", default=[], help="labels for it")
    t.set_defaults(run=_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        args.run(args)
    except KeyboardInterrupt:
        print("napari-tiled-unet: interrupted; no output written", file=sys.stderr)
        return 130
    except (CommandError, ValueError, TypeError, OSError) as err:
        from napari_tiled_unet.model.modelfile import ModelFileError

        kind = (
            ""
            if isinstance(err, CommandError | ValueError | ModelFileError)
            else f"{type(err).__name__}: "
        )
        print(f"napari-tiled-unet: error: {kind}{err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
