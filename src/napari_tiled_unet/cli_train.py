"""The command line's ``train`` subcommand: images and label images in, a model file out."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from napari_tiled_unet.cli_preset import GivenAction, add_preset_option, preset_values
from napari_tiled_unet.cli_progress import CommandError, parse_channels_option, progress_bar
from napari_tiled_unet.device import DEVICES
from napari_tiled_unet.jobs.train import TILE_2D, TILE_3D
from napari_tiled_unet.training.config import FINETUNE_LR, TRAIN_LABEL_MODES, TrainConfig

logger = logging.getLogger("napari_tiled_unet")
#: Ends the help of an option whose default argparse should show (train --help lists them all).
DEFAULT = " (default: %(default)s)"


def run_train(args: argparse.Namespace) -> None:
    from napari_tiled_unet.jobs import TrainImage, TrainRequest, open_training_pair, plan_training
    from napari_tiled_unet.jobs.paths import check_training_paths
    from napari_tiled_unet.model.modelfile import save_model

    if len(args.image) != len(args.labels):
        raise CommandError(
            f"got {len(args.image)} --image and {len(args.labels)} --labels; give one --labels per --image"
        )
    if len(args.validation_image) != len(args.validation_labels):
        raise CommandError("give one --validation-labels per --validation-image")
    output = check_training_paths(
        args.output,
        images=args.image,
        labels=args.labels,
        validation_images=args.validation_image,
        validation_labels=args.validation_labels,
        resume=args.resume,
    )
    if args.anisotropic_levels and args.ndim != 3:
        raise CommandError("--anisotropic-levels is for 3D models; add --ndim 3")

    def pair(image: str, labels: str, i: int | None) -> TrainImage:
        name = Path(image).name if i is None else f"pair {i + 1} ({Path(image).name})"
        return open_training_pair(image, labels, name)

    request = TrainRequest(
        config=_train_config(args),
        ndim=args.ndim,
        tile=preset_values(args)["tile"],
        model=args.resume,
        axes=args.axes,
        channels=parse_channels_option(args.channels),
    )
    plan = plan_training(
        request,
        [pair(i, lab, k) for k, (i, lab) in enumerate(zip(args.image, args.labels, strict=True))],
        [
            pair(i, lab, None)
            for i, lab in zip(args.validation_image, args.validation_labels, strict=True)
        ],
    )
    print(f"napari-tiled-unet: label mode {plan.label_mode.reason}", file=sys.stderr)
    if plan.label_mode.warning:
        print(f"napari-tiled-unet: warning: {plan.label_mode.warning}", file=sys.stderr)
    trainer = plan.trainer()
    if trainer.fine_tuning:
        print(f"napari-tiled-unet: {trainer.fine_tuning}", file=sys.stderr)
    try:
        progress_bar(trainer.iter_run(), "train", ("loss", "val_iou", "val_f1"))
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

    chosen = preset_values(args)
    return TrainConfig(
        label_mode=args.mode,
        iterations=args.iterations,
        tile_shape=requested_tile_shape(args.ndim, chosen["tile"]),
        batch_size=chosen["batch"],
        learning_rate=args.lr,
        fine_tune_learning_rate=args.lr if "lr" in getattr(args, "given", ()) else None,
        optimizer=args.optimizer,
        seed=args.seed,
        device=args.device,
        network=NetworkSpec(
            base_channels=chosen["base_channels"],
            depth=chosen["depth"],
            padding=args.padding,
            anisotropic_levels=args.anisotropic_levels,
        ),
        augment=AugmentSpec(
            elastic=not args.no_elastic,
            appearance=args.augment_appearance,
            scale=args.augment_scale,
            dimming=args.augment_dimming,
        ),
        validation_every=args.validate_every,
        w0=args.w0,
        ema_decay=args.ema_decay,
    )


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train --image I --labels L --output M.pt`` and its options to ``subparsers``."""
    defaults = TrainConfig()  # the one source of the training defaults shown in --help
    t = subparsers.add_parser("train", help="train a model from images and label images")
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
        choices=TRAIN_LABEL_MODES,
        default=defaults.label_mode,
        help="auto: read from the labels (many ids, each one blob: instance; a few values: "
        "semantic; a --resume model's own), printed at the start; semantic: value = class; "
        "instance: value = object id; sparse: 0 = not annotated; sparse-instance: "
        "0 = not annotated, 1 = background, 2, 3, ... = one whole object each" + DEFAULT,
    )
    t.add_argument(
        "--iterations", type=int, default=defaults.iterations, help="optimizer steps" + DEFAULT
    )
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
        help=f"training tile edge in pixels (default {TILE_2D}; 3D: {TILE_3D} in Y and X, in Z as "
        "deep as the thinnest volume allows)",
        action=GivenAction,
    )
    add_preset_option(t)
    t.add_argument(
        "--batch",
        type=int,
        action=GivenAction,
        default=defaults.batch_size,
        help="tiles per step" + DEFAULT,
    )
    t.add_argument(
        "--lr",
        type=float,
        action=GivenAction,
        default=defaults.learning_rate,
        help=f"learning rate; with --resume {FINETUNE_LR:g} (lower, for fine-tuning) unless "
        "given" + DEFAULT,
    )
    t.add_argument(
        "--optimizer",
        choices=("adam", "sgd"),
        default=defaults.optimizer,
        help=f"adam, or sgd with momentum {defaults.momentum}" + DEFAULT,
    )
    t.add_argument("--resume", help="fine-tune this model file instead of starting from scratch")
    t.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of every random choice" + DEFAULT
    )
    t.add_argument(
        "--device", choices=DEVICES, default=defaults.device, help="auto: cuda, mps, cpu" + DEFAULT
    )
    network = defaults.network
    t.add_argument(
        "--base-channels",
        type=int,
        action=GivenAction,
        default=network.base_channels,
        help="feature channels of the first level (doubled at each level down)" + DEFAULT,
    )
    t.add_argument(
        "--depth",
        type=int,
        action=GivenAction,
        default=network.depth,
        help="pooling levels of the U-Net" + DEFAULT,
    )
    t.add_argument(
        "--padding",
        choices=("same", "valid"),
        default=network.padding,
        help="same: output as large as the input; valid: the paper's unpadded convolutions"
        + DEFAULT,
    )
    t.add_argument(
        "--anisotropic-levels",
        type=int,
        default=0,
        help="3D only: the first this many levels pool in Y and X only, for stacks whose Z "
        "spacing is coarser than X/Y (1 for about 2x, 2 for about 4x; default 0)",
    )
    t.add_argument(
        "--validate-every",
        type=int,
        default=defaults.validation_every,
        help="validate every this many steps" + DEFAULT,
    )
    t.add_argument("--no-elastic", action="store_true", help="switch off elastic deformation")
    t.add_argument(
        "--augment-appearance",
        action="store_true",
        help="also vary how tiles look (gamma, uneven background, blur, shot and read noise), "
        "for a model meant for images from other microscopes",
    )
    t.add_argument(
        "--augment-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="magnify objects by a factor drawn from [1/F, F] (2: 0.5-2x; default 1: off), "
        "for a model meant for objects of other sizes",
    )
    t.add_argument(
        "--augment-dimming",
        type=float,
        default=1.0,
        metavar="D",
        help="with --augment-appearance: dim half the tiles by a factor drawn from [1/D, 1] "
        "(default 1: off), for images whose typical objects sit low in the normalised range "
        "(a few far brighter objects)",
    )
    t.add_argument(
        "--w0",
        type=float,
        default=defaults.w0,
        help="weight of the loss on the pixels between touching objects (the paper's w0; "
        "instance mode)" + DEFAULT,
    )
    t.add_argument(
        "--ema-decay",
        type=float,
        default=defaults.ema_decay,
        metavar="D",
        help="keep a moving average of the weights with this decay (e.g. 0.995, about the last "
        "200 steps of a long run) and save it instead of the last weights; 0: off" + DEFAULT,
    )
    t.add_argument("--validation-image", action="append", default=[], help="held-out image TIFF")
    t.add_argument("--validation-labels", action="append", default=[], help="labels for it")
    t.set_defaults(run=run_train)
