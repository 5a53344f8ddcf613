"""What a trained model's file says about it: the :class:`ModelInfo` of a training run."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from napari_tiled_unet.model.info import ModelInfo
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.training.config import TrainConfig
from napari_tiled_unet.training.targets import INSTANCE_MODES, model_label_mode


def run_info(
    config: TrainConfig,
    *,
    base: ModelInfo | None,
    normalization: Normalization,
    class_names: Sequence[str],
    in_channels: int,
    selection: Sequence[int] | None,
    source_channels: Collection[int],
    training: Mapping[str, Any],
    pairs: Sequence[Any] = (),
) -> ModelInfo:
    """The information stored with a model trained with ``config``.

    Parameters
    ----------
    config : TrainConfig
        The run's settings (label mode, tile shape, spatial axes).
    base : ModelInfo or None
        The fine-tuned model's information: what the run does not decide (the channel
        selection when the run has none, entries this version does not know) is kept.
    normalization : Normalization
        The normalisation trained with (unresolved: percentiles are resolved per image).
    class_names : sequence of str
        One name per output class.
    in_channels : int
        Input channels of the network.
    selection : sequence of int or None
        The channels of the images' C axis the run was given to train on, in order; None
        keeps ``base``'s selection (none for a new model).
    source_channels : collection of int
        The C axis lengths of the training images the selection applied to; stored when they
        are all the same, so prediction can apply the selection by itself.
    training : mapping
        The run's record (plain data).
    pairs : sequence of TrainingPair
        The training pairs; for an instance-trained model the median diameter and minimum
        size of their objects are stored
        (:func:`~napari_tiled_unet.object_size.training_object_stats`).
    """
    info = base if base is not None else ModelInfo()
    if selection is None:
        channels, source = info.channels, info.source_channels
    else:
        counts = set(source_channels)
        channels, source = tuple(selection), (counts.pop() if len(counts) == 1 else None)
    axes = "ZYX"[-config.ndim :]
    if config.label_mode in INSTANCE_MODES and pairs:
        from napari_tiled_unet.object_size import object_stats

        sizes = [object_sizes(p, config.label_mode) for p in pairs]
        stats = object_stats(np.concatenate(sizes), config.ndim, config.augment.scale)
        stats.setdefault("object_diameter_range", None)  # only a scale-augmented run's
        info = info.replace(**stats)
    return info.replace(
        normalization=normalization,
        label_mode=model_label_mode(config.label_mode),
        class_names=tuple(class_names),
        axes=("C" + axes) if in_channels > 1 else axes,
        channels=channels,
        source_channels=source,
        tile_shape=config.tile_shape,
        training=dict(training),
        package_version=None,
    )


def object_sizes(pair: Any, label_mode: str) -> np.ndarray:
    """Pixel counts of the objects of a scanned pair's labels, read chunk by chunk as the scan
    reads them (never the whole array; an object may span chunks)."""
    from napari_tiled_unet.training.scan import SCAN_PIXELS, chunk_window, scan_chunks
    from napari_tiled_unet.training.weights import object_map

    counts = np.zeros(1, np.int64)
    for chunk in scan_chunks(pair.blocks, SCAN_PIXELS):
        labels = np.asarray(pair.labels[chunk_window(pair.blocks, chunk)])
        found = np.bincount(object_map(labels, label_mode).ravel().astype(np.int64))
        if len(found) > len(counts):
            counts = np.pad(counts, (0, len(found) - len(counts)))
        counts[: len(found)] += found
    return counts[1:][counts[1:] > 0]
