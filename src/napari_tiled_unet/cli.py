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
    from napari_tiled_unet.io.tiff import atomic_path, open_tiff
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

    with contextlib.suppress(ImportError):
        from napari_tiled_unet.training.cli import add_train_parser

        add_train_parser(sub)
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
