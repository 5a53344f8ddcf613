"""Command line: ``napari-tiled-unet predict ...``, ``train ...`` and ``export ...``."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence

from napari_tiled_unet.cli_export import add_export_parser
from napari_tiled_unet.cli_progress import CommandError, parse_channels_option, progress_bar
from napari_tiled_unet.cli_train import add_train_parser
from napari_tiled_unet.device import PRECISIONS
from napari_tiled_unet.errors import TiledUNetError
from napari_tiled_unet.rescale import DIAMETER_HELP

logger = logging.getLogger("napari_tiled_unet")


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
        channels=parse_channels_option(args.channels),
        trust_package_code=args.trust_package_code,
        diameter=args.diameter,
    )


def _predict_one(request, job, client=None) -> None:
    from napari_tiled_unet.jobs import iter_predict_job

    events = iter_predict_job(
        job.image,
        request,
        output_path=job.output,
        probabilities_path=job.probabilities,
        client=client,
    )
    progress_bar(events, "predict")


def _dask_client(address: str | None):
    if address is None:
        return contextlib.nullcontext()
    from napari_tiled_unet.distributed import connect

    return connect(address)


def _predict(args: argparse.Namespace) -> None:
    from napari_tiled_unet._malloc import keep_freed_memory
    from napari_tiled_unet.jobs.foreign import load_predict_model
    from napari_tiled_unet.jobs.paths import plan_predict

    keep_freed_memory()
    plan = plan_predict(args.input, args.output, args.probabilities, args.format, args.model)
    # Loaded once for every input of a batch run.
    model = load_predict_model(args.model, trust_package_code=args.trust_package_code)
    request = _predict_request(args, model)
    with _dask_client(args.dask_scheduler) as client:
        _predict_jobs(request, plan, client)


def _predict_jobs(request, plan, client) -> None:
    if not plan.batch:
        _predict_one(request, plan.jobs[0], client)
        logger.info("wrote %s", plan.jobs[0].output)
        return
    failed = []
    for job in plan.jobs:
        if job.finished():
            logger.warning("skipping %s: %s already exists", job.image, job.output)
            continue
        try:
            _predict_one(request, job, client)
        except (TiledUNetError, ValueError, OSError) as err:  # one bad file stops no batch
            print(f"napari-tiled-unet: {job.image}: {err}", file=sys.stderr)
            failed.append(job.image.name)
        else:
            logger.info("wrote %s", job.output)
    if failed:
        raise CommandError(f"{len(failed)} of {len(plan.jobs)} inputs failed: {', '.join(failed)}")


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
    p.add_argument(
        "--model",
        help="model file (.pt) or bioimage.io package (.zip, rdf.yaml): exported by this "
        "plugin, or another network with torchscript weights; default: the bundled nuclei model",
    )
    p.add_argument(
        "--trust-package-code",
        action="store_true",
        help="allow a bioimage.io package whose network is built by Python source it ships "
        "(this runs that code); without it such packages are refused",
    )
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
        help="output labels (.tif, .tiff or .zarr; an existing .zarr folder is replaced only if napari-tiled-unet wrote it); for a batch run a folder, which gets NAME_labels.tif per input (inputs of the same NAME: their file or folder name) and lets a rerun skip inputs already done",
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
        "receptive field rounded up to the grid, exact: 112 at depth 4); smaller allows small tiles that keep most "
        "of their work (3D) but differs slightly near tile borders",
    )
    p.add_argument("--batch", type=int, help="tiles per pass (default 1; GPU: by free memory)")
    p.add_argument(
        "--device", default="auto", help="auto, cpu, mps, cuda[:N]; GPUs: cuda:0,cuda:1 or cuda:all"
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
        "--diameter",
        metavar="PX|auto",
        help=DIAMETER_HELP,
    )
    p.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS|local",
        help="run the tiles on a dask cluster: a scheduler address (tcp://host:8786) or 'local' for a LocalCluster on this machine; needs the dask extra",
    )
    p.set_defaults(run=_predict)

    add_train_parser(sub)

    add_export_parser(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch scheduler's time limit) arrived."""


@contextlib.contextmanager
def _signals_as_interrupts():
    """Turn SIGTERM (and SIGINT) into exceptions while the command runs, so that temporary
    outputs are removed and training saves its best model; Python would otherwise exit at
    once on SIGTERM and leave temporary files behind. After the first signal both are
    ignored until the process ends: a second one (``timeout`` signals the process and then
    its group; an impatient Ctrl-C) must not cut the cleanup short."""

    def stop(signum, frame):
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if all(signal.getsignal(s) is stop for s in previous):  # no signal came
            for s, handler in previous.items():
                signal.signal(s, signal.SIG_DFL if handler is None else handler)


def _interrupted(what: str) -> str:
    """The line for an interrupted run: whether its unfinished outputs are really gone."""
    from napari_tiled_unet.jobs.paths import remove_unfinished_outputs

    left = remove_unfinished_outputs()
    if left:
        return f"{what}; could not remove unfinished outputs: {', '.join(map(str, left))}"
    return f"{what}; unfinished outputs were removed"


def _show_warning(message, category, filename, lineno, file=None, line=None, *, others) -> None:
    """The engine's warnings (e.g. a tile needing more memory than the budget) as one line on
    stderr; others (a ResourceWarning from the garbage collector, say) go to ``others``, the
    ``warnings.showwarning`` that was in place."""
    if issubclass(category, UserWarning):
        print(f"napari-tiled-unet: warning: {message}", file=sys.stderr)
    else:
        others(message, category, filename, lineno, file, line)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    # A LocalCluster's workers log every start and task failure at INFO; the run's own
    # progress bar and one-line errors say what matters.
    logging.getLogger("distributed").setLevel(logging.INFO if args.verbose else logging.ERROR)
    try:
        with _signals_as_interrupts(), warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, others=warnings.showwarning)
            args.run(args)
    except Terminated:
        print(f"napari-tiled-unet: {_interrupted('terminated')}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"napari-tiled-unet: {_interrupted('interrupted')}", file=sys.stderr)
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
