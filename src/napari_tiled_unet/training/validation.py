"""Validation during training: choosing held-out windows, reading them once, scoring a model.

The validation windows are tile-sized blocks with annotations, either of held-out images or
held out of the training images (their pixels then never count in the training loss). They are
read once, without augmentation, into :class:`ValidationTiles`; :func:`score_validation` scores
a model on them (pixel IoU and F1, the loss and, for instances, object F1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_tiled_unet.metrics import (
    ObjectMatch,
    confusion_matrix,
    f1_per_class,
    iou_per_class,
    match_objects,
    mean_score,
)
from napari_tiled_unet.model.info import ModelInfo
from napari_tiled_unet.model.unet import UNet
from napari_tiled_unet.separation import InstanceOptions
from napari_tiled_unet.training.config import TrainConfig
from napari_tiled_unet.training.loss import weighted_cross_entropy
from napari_tiled_unet.training.pairs import TrainingPair, read_window
from napari_tiled_unet.training.sampler import TileLayout
from napari_tiled_unet.training.targets import INSTANCE_MODES, make_targets

logger = logging.getLogger(__name__)


def window_origin(pair: TrainingPair, block: int, out_shape: Sequence[int]) -> tuple[int, ...]:
    """Origin of a full label window covering a block, shifted inside the image at its end."""
    start, _ = pair.block_window(block)
    return tuple(min(s, n - o) for s, n, o in zip(start, pair.spatial, out_shape, strict=True))


def choose_validation_blocks(
    pairs: Sequence[TrainingPair], count: int, rng: np.random.Generator, keep_one: bool
) -> list[tuple[int, int]]:
    """Pick ``count`` annotated blocks (pair index, block) at random.

    With ``keep_one`` at least one annotated block is left over (for training); fewer blocks are
    returned when there are not enough.
    """
    annotated = [
        (i, int(b))
        for i, p in enumerate(pairs)
        for b in np.flatnonzero(p.block_counts[:, 1:].sum(axis=1))
    ]
    available = len(annotated) - (1 if keep_one else 0)
    count = max(0, min(count, available))
    if count == 0:
        return []
    chosen = rng.choice(len(annotated), size=count, replace=False)
    return [annotated[int(k)] for k in sorted(chosen)]


@dataclass
class ValidationTiles:
    """Fixed, un-augmented validation tiles held in memory.

    Attributes
    ----------
    images : ndarray of float32, shape (N, C, *tile_shape)
    targets : ndarray of int64, shape (N, *out_shape)
    annotated : ndarray of bool, shape (N, *out_shape)
    instances : ndarray of int or None, shape (N, *out_shape)
        Ground-truth object ids (instance mode), for object-level F1.
    options : InstanceOptions or None
        How predicted classes become objects for that F1: the separation prediction will use
        with the run's model (:func:`run_instance_options`); None: the plain rule.
    """

    images: np.ndarray
    targets: np.ndarray
    annotated: np.ndarray
    instances: np.ndarray | None
    options: InstanceOptions | None = None

    def __len__(self) -> int:
        return len(self.images)


def load_validation_tiles(
    tiles: Sequence[tuple[TrainingPair, tuple[int, ...]]], layout: TileLayout, label_mode: str
) -> ValidationTiles:
    """Read the validation windows ((pair, label-window origin) each) once."""
    bare = TileLayout(layout.tile_shape, layout.out_shape, layout.offset, 0)
    images, targets, annotated, instances = [], [], [], []
    for pair, origin in tiles:
        start, stop = bare.read_bounds(origin)
        image = read_window(pair.image, start, stop, pair.channel_axis)
        image = pair.normalization.apply(image, channel_axis=0 if pair.channel_axis else None)
        images.append(image if pair.channel_axis else image[None])
        stop_out = tuple(o + n for o, n in zip(origin, layout.out_shape, strict=True))
        labels = read_window(pair.labels, origin, stop_out)
        if labels.dtype == bool:
            labels = labels.view(np.uint8)
        # Targets from a window with context, so boundaries at the tile edge are right.
        grown = read_window(
            pair.labels,
            tuple(o - 1 for o in origin),
            tuple(o + 1 for o in stop_out),
        )
        t, a = make_targets(grown.view(np.uint8) if grown.dtype == bool else grown, label_mode)
        inner = (slice(1, -1),) * len(origin)
        targets.append(t[inner])
        annotated.append(a[inner])
        instances.append(labels)
    return ValidationTiles(
        np.stack(images).astype(np.float32),
        np.stack(targets),
        np.stack(annotated),
        np.stack(instances) if label_mode == "instance" else None,
    )


def hold_out_validation(
    pairs: Sequence[TrainingPair],
    validation_pairs: Sequence[TrainingPair],
    config: TrainConfig,
    layout: TileLayout,
    rng: np.random.Generator,
) -> tuple[ValidationTiles | None, str]:
    """Choose and read the validation tiles of a run.

    With ``validation_pairs``, up to ``config.max_validation_tiles`` of their annotated blocks;
    else ``config.validation_fraction`` of the annotated blocks of ``pairs`` (at most
    ``config.max_validation_tiles``, one annotated block always left for training), whose
    windows are recorded in each pair's ``held_out`` and ``held_out_blocks``.

    Returns
    -------
    tiles : ValidationTiles or None
        None when nothing is validated on.
    source : str
        "held-out images", "held-out tiles" or "none", for the run's record.
    """
    out = layout.out_shape
    if validation_pairs:
        chosen = choose_validation_blocks(
            validation_pairs, config.max_validation_tiles, rng, keep_one=False
        )
        tiles = [
            (validation_pairs[i], window_origin(validation_pairs[i], b, out)) for i, b in chosen
        ]
        source = "held-out images"
    elif config.validation_fraction > 0:
        annotated = sum(int(np.count_nonzero(p.block_counts[:, 1:].sum(axis=1))) for p in pairs)
        wanted = min(
            config.max_validation_tiles, max(1, round(config.validation_fraction * annotated))
        )
        chosen = choose_validation_blocks(pairs, wanted, rng, keep_one=True)
        if not chosen:
            logger.warning(
                "only one tile-sized block of the training labels is annotated: nothing can "
                "be held out for validation, so the last model is kept. Annotate more, "
                "use smaller tiles, or pass validation pairs."
            )
        tiles = []
        for i, b in chosen:
            pair = pairs[i]
            origin = window_origin(pair, b, out)
            pair.held_out.append(origin)
            pair.held_out_blocks.append(b)
            tiles.append((pair, origin))
        source = "held-out tiles" if tiles else "none"
    else:
        tiles, source = [], "none"
    if not tiles:
        return None, source
    validation = load_validation_tiles(tiles, layout, config.label_mode)
    validation.options = run_instance_options(pairs, config)
    return validation, source


def run_instance_options(
    pairs: Sequence[TrainingPair], config: TrainConfig
) -> InstanceOptions | None:
    """The instance separation prediction will apply with this run's model: the one its file's
    object sizes, measured from the training objects, give (None outside instance mode)."""
    from napari_tiled_unet.object_size import object_stats
    from napari_tiled_unet.training.record import object_sizes

    if config.label_mode != "instance" or not pairs:
        return None
    sizes = np.concatenate([object_sizes(p, config.label_mode) for p in pairs])
    if not sizes.size:
        return None
    stats = object_stats(sizes, config.ndim, config.augment.scale)
    info = ModelInfo(axes="ZYX"[-config.ndim :], **stats)
    return InstanceOptions.for_model(info)


def score_validation(
    model: UNet,
    tiles: ValidationTiles,
    label_mode: str,
    num_classes: int,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool,
) -> dict[str, float]:
    """Scores of ``model`` on the validation tiles.

    Parameters
    ----------
    model : UNet
        On ``device``; put in eval mode for the scoring and back in train mode after.
    tiles : ValidationTiles
    label_mode : str
    num_classes : int
        Output classes of ``model``.
    batch_size : int
        Tiles per forward pass.
    device : torch.device
    amp : bool
        Use float16 autocast.

    Returns
    -------
    dict of str to float
        ``val_iou``, ``val_f1`` (mean over the non-background classes; object versus
        background in instance mode), ``val_loss`` (cross-entropy over the annotated pixels)
        and, in instance mode, ``val_object_f1``.
    """
    from napari_tiled_unet.postprocess import labels_from_probabilities

    confusion = np.zeros((num_classes, num_classes), np.int64)
    objects = ObjectMatch(0, 0, 0)
    loss_sum, weight_sum = 0.0, 0.0
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(tiles), batch_size):
                batch = slice(start, start + batch_size)
                x = torch.from_numpy(tiles.images[batch]).to(device)
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    logits = model(x)
                logits = logits.float()
                targets = torch.from_numpy(tiles.targets[batch]).to(device)
                mask = torch.from_numpy(tiles.annotated[batch]).to(device).float()
                loss_sum += float(weighted_cross_entropy(logits, targets, mask)) * float(mask.sum())
                weight_sum += float(mask.sum())
                probabilities = torch.softmax(logits, dim=1).cpu().numpy()
                prediction = probabilities.argmax(axis=1)
                confusion += confusion_matrix(
                    tiles.targets[batch], prediction, num_classes, tiles.annotated[batch]
                )
                if label_mode == "instance":
                    for p, truth in zip(probabilities, tiles.instances[batch], strict=True):
                        found = labels_from_probabilities(p, "instance", options=tiles.options)
                        objects = objects + match_objects(truth, found)
    finally:
        model.train()
    scores = {}
    if label_mode in INSTANCE_MODES:
        # Object (interior or boundary) versus background.
        binary = np.array(
            [
                [confusion[0, 0], confusion[0, 1:].sum()],
                [confusion[1:, 0].sum(), confusion[1:, 1:].sum()],
            ]
        )
        scores["val_iou"] = mean_score(iou_per_class(binary), [1])
        scores["val_f1"] = mean_score(f1_per_class(binary), [1])
        if label_mode == "instance":  # partial annotations have no complete object list
            scores["val_object_f1"] = float(objects.f1)
    else:
        classes = slice(1, None) if label_mode == "semantic" else None
        scores["val_iou"] = mean_score(iou_per_class(confusion), classes)
        scores["val_f1"] = mean_score(f1_per_class(confusion), classes)
    scores["val_loss"] = loss_sum / weight_sum if weight_sum else 0.0
    return scores
