"""Command line: ``napari-tiled-unet predict ...`` and ``napari-tiled-unet train ...``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from napari_tiled_unet.device import DEVICES, PRECISIONS
from napari_tiled_unet.errors import TiledUNetError, UserInputError
from napari_tiled_unet.jobs.train import TILE_3D

logger = logging.getLogger("napari_tiled_unet")


class CommandError(UserInputError):
    """A user error to report as one line on stderr."""


_UNITS = {"predict": "tile", "instances": "block"}


def _progress_bar(events, desc: str, postfix_keys: Sequence[str] = ()):
    """Drive a tqdm bar from engine Progress events; return the generator's result.

    A new bar starts whenever the events' stage changes (e.g. "predict", then "instances"),
    named ``desc`` for the first stage and after the stage for later ones.
    """
    from tqdm import tqdm

    bar = None
    stage = None
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as stop:
                return stop.value
            if bar is None or event.stage != stage:
                if bar is not None:
                    bar.close()
                bar = tqdm(
                    total=event.total,
                    desc=desc if stage is None else event.stage,
                    unit=_UNITS.get(event.stage, "it"),
                )
                stage = event.stage
            bar.update(event.done - bar.n)
            if event.warning:
                bar.write(f"napari-tiled-unet: warning: {event.warning}", file=sys.stderr)
            shown = {k: f"{event.metrics[k]:.3g}" for k in postfix_keys if k in event.metrics}
            if shown:
                bar.set_postfix(shown, refresh=False)
    finally:
        events.close()
        if bar is not None:
            bar.close()


TIFF_INPUTS = (".tif", ".tiff")


def _gather_inputs(paths: Sequence[str]) -> tuple[list[Path], bool]:
    """The input files, and whether this is a batch run (several inputs or a folder)."""
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in TIFF_INPUTS and not p.name.startswith(".")
            )
            if not found:
                raise CommandError(f"folder {path} holds no .tif or .tiff files")
            files.extend(found)
        else:
            files.append(path)
    batch = len(paths) > 1 or any(Path(p).is_dir() for p in paths)
    return files, batch


def _batch_target(folder: str, image: Path, what: str, fmt: str) -> Path:
    return Path(folder) / f"{image.stem}_{what}.{fmt}"


def _plan_outputs(args: argparse.Namespace) -> list[tuple[Path, Path, Path | None]]:
    """(input, labels output, probabilities output or None) for every input to run."""
    files, batch = _gather_inputs(args.input)
    if not batch:
        probs = Path(args.probabilities) if args.probabilities else None
        return [(files[0], Path(args.output), probs)]
    for folder in (args.output, args.probabilities):
        if folder is not None:
            if Path(folder).exists() and not Path(folder).is_dir():
                raise CommandError(
                    f"with several inputs or a folder, --output and --probabilities name folders; {folder} is a file"
                )
            Path(folder).mkdir(parents=True, exist_ok=True)
    jobs = [
        (
            image,
            _batch_target(args.output, image, "labels", args.format),
            _batch_target(args.probabilities, image, "probabilities", args.format)
            if args.probabilities
            else None,
        )
        for image in files
    ]
    # Outputs of an earlier run in the same folder are not inputs.
    produced = {p.resolve() for _, *outs in jobs for p in outs if p is not None}
    return [job for job in jobs if job[0].resolve() not in produced]


def _parse_channels(text: str | None) -> list[int] | None:
    """``--channels "0,2"`` -> ``[0, 2]``."""
    from napari_tiled_unet.axes import parse_channels

    try:
        channels = parse_channels(text)
    except ValueError as err:
        raise CommandError(f"--channels: {err}") from None
    if text is not None and not channels:
        raise CommandError("--channels needs at least one channel number, e.g. 0")
    return channels


def _predict_request(args: argparse.Namespace, model):
    from napari_tiled_unet.jobs import PredictRequest

    return PredictRequest(
        model=model,
        output=args.kind,
        tile=args.tile,
        halo=args.halo,
        batch_size=args.batch,
        device=args.device,
        precision=args.precision,
        axes=args.axes,
        channels=_parse_channels(args.channels),
    )


def _predict_one(request, image_path: Path, out: Path, probs: Path | None, client=None) -> None:
    from napari_tiled_unet.jobs import iter_predict_job

    job = iter_predict_job(
        image_path, request, output_path=out, probabilities_path=probs, client=client
    )
    _progress_bar(job, "predict")


def _dask_client(address: str | None):
    if address is None:
        return contextlib.nullcontext()
    from napari_tiled_unet.distributed import connect

    return connect(address)


def _predict(args: argparse.Namespace) -> None:
    from napari_tiled_unet._malloc import keep_freed_memory
    from napari_tiled_unet.jobs import load_job_model

    keep_freed_memory()
    jobs = _plan_outputs(args)
    # Loaded once for every input of a batch run.
    request = _predict_request(args, load_job_model(args.model))
    with _dask_client(args.dask_scheduler) as client:
        _predict_jobs(request, args.input, jobs, client)


def _predict_jobs(request, inputs: Sequence[str], jobs, client) -> None:
    if len(jobs) == 1 and len(inputs) == 1 and not Path(inputs[0]).is_dir():
        image_path, out, probs = jobs[0]
        _predict_one(request, image_path, out, probs, client)
        logger.info("wrote %s", out)
        return
    failed = []
    for image_path, out, probs in jobs:
        if out.exists() and (probs is None or probs.exists()):
            logger.warning("skipping %s: %s already exists", image_path.name, out)
            continue
        try:
            _predict_one(request, image_path, out, probs, client)
        except (TiledUNetError, ValueError, OSError) as err:  # one bad file stops no batch
            print(f"napari-tiled-unet: {image_path}: {err}", file=sys.stderr)
            failed.append(image_path.name)
        else:
            logger.info("wrote %s", out)
    if failed:
        raise CommandError(f"{len(failed)} of {len(jobs)} inputs failed: {', '.join(failed)}")


def _train(args: argparse.Namespace) -> None:
    from napari_tiled_unet.io.tiff import open_tiff, tiff_axes
    from napari_tiled_unet.jobs import LayoutHints, TrainImage, TrainRequest, plan_training
    from napari_tiled_unet.model.modelfile import save_model

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
    if args.anisotropic_levels and args.ndim != 3:
        raise CommandError("--anisotropic-levels is for 3D models; add --ndim 3")

    def pair(image: str, labels: str, i: int | None) -> TrainImage:
        name = Path(image).name if i is None else f"pair {i + 1} ({Path(image).name})"
        hints = LayoutHints(tiff_axes=tiff_axes(image))
        return TrainImage(open_tiff(image), open_tiff(labels), name, hints)

    request = TrainRequest(
        config=_train_config(args),
        ndim=args.ndim,
        tile=args.tile,
        model=args.resume,
        axes=args.axes,
        channels=_parse_channels(args.channels),
    )
    plan = plan_training(
        request,
        [pair(i, lab, k) for k, (i, lab) in enumerate(zip(args.image, args.labels, strict=True))],
        [
            pair(i, lab, None)
            for i, lab in zip(args.validation_image, args.validation_labels, strict=True)
        ],
    )
    trainer = plan.trainer()
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
    best = trainer.best_model
    save_model(best, output)
    scores = best.info.best_scores
    logger.warning("saved %s %s", output, " ".join(f"{k}={v:.3f}" for k, v in scores.items()))


def _train_config(args: argparse.Namespace):
    from napari_tiled_unet.jobs.train import requested_tile_shape
    from napari_tiled_unet.training import AugmentSpec, NetworkSpec, TrainConfig

    return TrainConfig(
        label_mode=args.mode,
        iterations=args.iterations,
        tile_shape=requested_tile_shape(args.ndim, args.tile),
        batch_size=args.batch,
        learning_rate=args.lr,
        optimizer=args.optimizer,
        seed=args.seed,
        device=args.device,
        network=NetworkSpec(
            base_channels=args.base_channels,
            depth=args.depth,
            padding=args.padding,
            anisotropic_levels=args.anisotropic_levels,
        ),
        augment=AugmentSpec(elastic=not args.no_elastic),
        validation_every=args.validate_every,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-tiled-unet",
        description="Overlap-tile U-Net segmentation: predict on images of any size, or train a model.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="segment a TIFF image with a model")
    p.add_argument(
        "input",
        nargs="+",
        help="input TIFF (Y,X; C,Y,X for multi-channel models; any T,Z,C,Y,X layout with --axes or metadata); several files or a folder for a batch run",
    )
    p.add_argument("--model", help="model file (.pt); default: the bundled nuclei model")
    p.add_argument(
        "--axes",
        help="axis layout of the input(s), letters T Z C Y X in file order, e.g. TZCYX, YXC, "
        "ZYX; T (and Z for a 2D model) are predicted frame by frame. Default: from the TIFF "
        "metadata, else the model's layout or the shape; ambiguous files are an error listing "
        "the readings",
    )
    p.add_argument(
        "--channels",
        help="channels of the C axis to feed the model, in order, e.g. 0,2 (default: all; for "
        "a model trained on a channel selection, that stored selection when the input has as "
        "many channels as its training images)",
    )
    p.add_argument(
        "--output",
        "-o",
        required=True,
        help="output labels (.tif, .tiff or .zarr); for a batch run a folder, which gets NAME_labels.tif per input and lets a rerun skip inputs already done",
    )
    p.add_argument(
        "--probabilities",
        help="also write class probabilities (C then the input's axes without C, float32) here (a folder for a batch run); such runs hold the probabilities of one image in memory",
    )
    p.add_argument(
        "--format",
        choices=("tif", "zarr"),
        default="tif",
        help="output format of a batch run (default tif: tiled, compressed BigTIFF)",
    )
    p.add_argument(
        "--tile",
        type=int,
        help="network input tile edge in pixels (default: the largest up to 1280 for 2D, 256 "
        "for 3D, whose forward pass is estimated at 768 MiB or less)",
    )
    p.add_argument(
        "--halo",
        type=int,
        help="context in pixels per tile side, for 'same' networks (default: the whole "
        "receptive field, exact: 107 at depth 4); smaller allows small tiles that keep most "
        "of their work (3D) but differs slightly near tile borders",
    )
    p.add_argument("--batch", type=int, default=1, help="tiles per forward pass (default 1)")
    p.add_argument(
        "--device", choices=DEVICES, default="auto", help="default: auto (cuda, mps, cpu)"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="network arithmetic: float32 (exact, default), bfloat16 (CPU or GPU) or float16 (GPU); the latter two are faster where supported and change a few labels",
    )
    p.add_argument(
        "--kind",
        choices=("auto", "labels", "instances"),
        default="auto",
        help="labels: class ids; instances: object ids; auto: instances for models trained on instance labels",
    )
    p.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS|local",
        help="run the tiles on a dask cluster: a scheduler address (tcp://host:8786) or 'local' for a LocalCluster on this machine; needs the dask extra",
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
        "--axes",
        help="axis layout of every --image (and --validation-image), e.g. YXC, CYX, TYX; "
        "labels have the same axes without C; T and Z become separate 2D training images. "
        "Default: from each TIFF's metadata and the labels' shape",
    )
    t.add_argument(
        "--channels",
        help="channels of the C axis to train on, in order, e.g. 0,2; stored in the model file, "
        "which applies it at prediction to inputs with as many channels (default: all; with "
        "--resume, the model's stored selection for inputs of its training images' channels)",
    )
    t.add_argument(
        "--mode",
        choices=("semantic", "instance", "sparse"),
        default="semantic",
        help="semantic: value = class; instance: value = object id; sparse: 0 = not annotated",
    )
    t.add_argument("--iterations", type=int, default=1000)
    t.add_argument(
        "--ndim",
        type=int,
        choices=(2, 3),
        default=2,
        help="2: a model of YX planes (Z stacks train plane by plane); 3: a model of ZYX "
        "volumes (default 2; a --resume model keeps its own)",
    )
    t.add_argument(
        "--tile",
        type=int,
        help=f"training tile edge in pixels (default 256; 3D: {TILE_3D} in Y and X, in Z as "
        "deep as the thinnest volume allows)",
    )
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    t.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    t.add_argument("--resume", help="fine-tune this model file instead of starting from scratch")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", choices=DEVICES, default="auto")
    t.add_argument("--base-channels", type=int, default=32)
    t.add_argument("--depth", type=int, default=4)
    t.add_argument("--padding", choices=("same", "valid"), default="same")
    t.add_argument(
        "--anisotropic-levels",
        type=int,
        default=0,
        help="3D only: the first this many levels pool in Y and X only, for stacks whose Z "
        "spacing is coarser than X/Y (1 for about 2x, 2 for about 4x; default 0)",
    )
    t.add_argument("--validate-every", type=int, default=50)
    t.add_argument("--no-elastic", action="store_true", help="switch off elastic deformation")
    t.add_argument("--validation-image", action="append", default=[], help="held-out image TIFF")
    t.add_argument("--validation-labels", action="append", default=[], help="labels for it")
    t.set_defaults(run=_train)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch scheduler's time limit) arrived."""


@contextlib.contextmanager
def _terminate_as_interrupt():
    """Turn SIGTERM into an exception while the command runs, so that temporary outputs are
    removed and training saves its best model, as on Ctrl-C; Python would otherwise exit at
    once and leave temporary files behind."""

    def stop(signum, frame):
        raise Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. a tile needing more memory than the budget) as one line on stderr."""
    print(f"napari-tiled-unet: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        with _terminate_as_interrupt(), warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args.run(args)
    except Terminated:
        print("napari-tiled-unet: terminated; unfinished outputs were removed", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("napari-tiled-unet: interrupted; unfinished outputs were removed", file=sys.stderr)
        return 130
    except (TiledUNetError, OSError) as err:
        # The user's problem: one line (with its traceback under -v). Anything else is a bug
        # and keeps its traceback.
        if args.verbose:
            traceback.print_exc()
        kind = "" if isinstance(err, TiledUNetError) else f"{type(err).__name__}: "
        print(f"napari-tiled-unet: error: {kind}{err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
