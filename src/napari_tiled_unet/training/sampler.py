"""Random training samples: where a sample's pieces lie, and drawing augmented samples.

:class:`TileSampler` draws tiles from scanned pairs
(:func:`~napari_tiled_unet.training.scan.scan_pair`): foreground-aware placement, lazy reading
with mirror padding, augmentation, targets and the per-pixel loss weights.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.tiling.stitch import mirror_indices
from napari_tiled_unet.training.augment import Augmentation, scaled_region
from napari_tiled_unet.training.pairs import TrainingPair, read_window
from napari_tiled_unet.training.scan import rescan_box
from napari_tiled_unet.training.targets import INSTANCE_MODES, make_targets
from napari_tiled_unet.training.weights import border_weights, object_map

#: Share of samples placed on recently painted labels while :attr:`TileSampler.recent_left`.
RECENT_FRACTION = 0.5
#: Samples after a paint that favour the new labels (16 steps of batch 4).
RECENT_SAMPLES = 64
#: Painted boxes remembered as recent.
RECENT_BOXES = 16

if TYPE_CHECKING:
    from napari_tiled_unet.model.geometry import UNetGeometry
    from napari_tiled_unet.training.config import TrainConfig


@dataclass(frozen=True)
class TileLayout:
    """Where the pieces of a training sample lie, per spatial axis.

    A sample reads a region ``out_shape + 2 * (offset + margin)`` around its label window:
    the network input is its centre of ``tile_shape`` (``offset`` pixels of context each side of
    the label window, 0 for 'same' padding), and ``margin`` extra pixels give the weight map the
    objects just outside the tile.

    Parameters
    ----------
    tile_shape : tuple of int
        Network input, pixels.
    out_shape : tuple of int
        Network output = label window, pixels.
    offset : int or tuple of int
        Input pixels before the first output pixel: one number for every axis, or one per
        axis (an anisotropic 'valid' 3D network trims less along Z than along Y and X).
    margin : int
        Extra context for the weight map, pixels.
    """

    tile_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    offset: int | tuple[int, ...]
    margin: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.offset, int | np.integer):
            offsets = tuple(int(o) for o in self.offset)
            if len(offsets) != len(self.tile_shape):
                raise UserInputError(
                    f"TileLayout.offset needs one entry per axis of tile_shape "
                    f"{self.tile_shape}, got {offsets}"
                )
            object.__setattr__(self, "offset", offsets)

    @classmethod
    def for_training(cls, config: TrainConfig, geometry: UNetGeometry) -> TileLayout:
        """The layout of ``config``'s tiles for a network of ``geometry``.

        The margin is what the weight map's border term (``2 * sigma``) or the instance
        boundaries (1 pixel) need beyond the label window.

        Raises
        ------
        ValueError
            If the network does not accept ``config.tile_shape``, saying what it needs.
        """
        try:
            out_shape = geometry.check_input_shape(config.tile_shape)
        except ValueError as err:
            levels = geometry.anisotropic_levels
            raise UserInputError(
                f"TrainConfig.tile_shape {config.tile_shape} does not suit a depth-"
                f"{geometry.depth} '{geometry.padding}' {config.ndim}D U-Net"
                + (f" with {levels} anisotropic level(s)" if levels else "")
                + f" ({geometry.describe()}; smallest input {geometry.min_input_shape}): {err}"
            ) from None
        if config.weighted_loss and config.w0 > 0 and config.label_mode != "sparse":
            margin = math.ceil(2 * config.sigma)
        else:
            margin = 1 if config.label_mode in INSTANCE_MODES else 0
        offsets = tuple(axis.output_offset for axis in geometry.axes)
        return cls(config.tile_shape, out_shape, offsets, margin)

    @property
    def offsets(self) -> tuple[int, ...]:
        """:attr:`offset` per spatial axis."""
        if isinstance(self.offset, tuple):
            return self.offset
        return (int(self.offset),) * len(self.tile_shape)

    @property
    def read_shape(self) -> tuple[int, ...]:
        return tuple(t + 2 * self.margin for t in self.tile_shape)

    def read_bounds(self, origin: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(start, stop) of the region read for a label window at ``origin``."""
        start = tuple(o - off - self.margin for o, off in zip(origin, self.offsets, strict=True))
        return start, tuple(s + r for s, r in zip(start, self.read_shape, strict=True))

    def crop(self, array: np.ndarray, by: int | Sequence[int]) -> np.ndarray:
        """Remove ``by`` pixels (one number, or one per axis) from each side of the trailing
        spatial axes."""
        ndim = len(self.tile_shape)
        per_axis = (int(by),) * ndim if isinstance(by, int | np.integer) else tuple(by)
        if not any(per_axis):
            return array
        lead = (slice(None),) * (array.ndim - ndim)
        return array[
            lead + tuple(slice(b, array.shape[-ndim + i] - b) for i, b in enumerate(per_axis))
        ]


@dataclass(frozen=True)
class SampleSettings:
    """What the sampler needs besides the pairs (derived from a ``TrainConfig``)."""

    label_mode: str
    foreground_fraction: float
    class_weight: np.ndarray | None
    use_weights: bool
    w0: float
    sigma: float
    augmentation: Augmentation
    #: Classes of the network: targets of labels painted later beyond them get weight 0.
    num_classes: int | None = None

    @classmethod
    def from_config(
        cls, config: TrainConfig, class_weight: np.ndarray | None, num_classes: int | None = None
    ) -> SampleSettings:
        """The settings of ``config``, with the class weights of the training labels."""
        return cls(
            num_classes=num_classes,
            label_mode=config.label_mode,
            foreground_fraction=config.effective_foreground_fraction,
            class_weight=class_weight,
            use_weights=config.weighted_loss,
            w0=config.w0,
            sigma=config.sigma,
            augmentation=Augmentation.from_spec(config.augment),
        )


class TileSampler:
    """Draws random, augmented training tiles from scanned pairs.

    Tiles are placed on an annotated non-background pixel with probability
    ``foreground_fraction`` (a class picked uniformly among those present, then a block in
    proportion to that class's pixels, then one of its pixels) and uniformly otherwise.
    Held-out validation windows (``pair.held_out``) get weight 0.

    Labels painted while training runs arrive as boxes ``(pair index, start, stop)`` in
    ``changes`` (appended by any thread): before each batch the sampler re-counts the blocks
    they touch (:func:`~napari_tiled_unet.training.scan.rescan_box`) and, for the next
    :data:`RECENT_SAMPLES` samples, places each with probability :data:`RECENT_FRACTION` on a
    labelled pixel of a recent box.

    Parameters
    ----------
    pairs : list of TrainingPair
        Scanned pairs.
    layout : TileLayout
    settings : SampleSettings
    changes : deque, optional
        Boxes of labels painted since the start.
    """

    def __init__(
        self,
        pairs: list[TrainingPair],
        layout: TileLayout,
        settings: SampleSettings,
        changes: deque | None = None,
    ):
        self.pairs, self.layout, self.settings = pairs, layout, settings
        self.changes = deque() if changes is None else changes
        #: Recently painted boxes, newest last: (pair index, start, stop).
        self.recent: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []
        #: Samples still to place preferably on recent boxes.
        self.recent_left = 0
        #: Painted boxes taken into the tables so far.
        self.boxes_taken = 0
        self._areas = np.array(
            [
                math.prod(n - o + 1 for n, o in zip(p.spatial, layout.out_shape, strict=True))
                for p in pairs
            ],
            np.float64,
        )
        self._tables = self._foreground_tables()

    def _foreground_tables(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Per interesting column: (column, (pair, block) index pairs, cumulative weights)."""
        first = 1  # column 0 is background / not annotated in every mode
        columns = max(p.block_counts.shape[1] for p in self.pairs)
        tables = []
        for column in range(first, columns):
            keys, weights = [], []
            for i, p in enumerate(self.pairs):
                if column >= p.block_counts.shape[1]:
                    continue
                w = p.block_counts[:, column].astype(np.float64)
                w[p.held_out_blocks] = 0
                nz = np.flatnonzero(w)
                keys.extend((i, int(b)) for b in nz)
                weights.extend(w[nz])
            if keys:
                tables.append((column, np.array(keys), np.cumsum(weights)))
        return tables

    def take_changes(self) -> int:
        """Re-count the blocks of the painted boxes queued so far; returns how many boxes."""
        taken = 0
        while self.changes:
            index, start, stop = self.changes.popleft()
            pair = self.pairs[index]
            start = tuple(max(0, int(s)) for s in start)
            stop = tuple(min(int(e), n) for e, n in zip(stop, pair.spatial, strict=True))
            if rescan_box(pair, self.settings.label_mode, start, stop):
                self.recent = [*self.recent[-(RECENT_BOXES - 1) :], (index, start, stop)]
                taken += 1
        if taken:
            self._tables = self._foreground_tables()
            self.recent_left = RECENT_SAMPLES
            self.boxes_taken += taken
        return taken

    def _recent_origin(self, rng: np.random.Generator) -> tuple[int, tuple[int, ...]] | None:
        """A label window on a labelled pixel of a recently painted box (None if it has none)."""
        index, start, stop = self.recent[int(rng.integers(len(self.recent)))]
        pair = self.pairs[index]
        labels = np.asarray(read_window(pair.labels, start, stop))
        hit = labels > 0
        for origin in pair.held_out:
            local = tuple(
                slice(max(o - s, 0), max(o + n - s, 0))
                for o, n, s in zip(origin, self.layout.out_shape, start, strict=True)
            )
            hit[local] = False
        return self._origin_on(pair, index, hit, start, rng)

    def _origin_on(self, pair, index, hit, start, rng) -> tuple[int, tuple[int, ...]] | None:
        """A label window whose central half holds a random pixel of ``hit`` (at ``start``)."""
        candidates = np.flatnonzero(hit)
        if not candidates.size:
            return None
        out = self.layout.out_shape
        pixel = np.unravel_index(int(rng.choice(candidates)), hit.shape)
        # The pixel lands in the central half of the window, so that augmentation
        # (rotation, elastic warp) keeps it inside.
        return index, tuple(
            int(np.clip(s + int(q) - int(rng.integers(o // 4, o - o // 4)), 0, n - o))
            for s, q, o, n in zip(start, pixel, out, pair.spatial, strict=True)
        )

    def sample_origin(self, rng: np.random.Generator) -> tuple[int, tuple[int, ...]]:
        """A pair index and the origin of a label window inside it."""
        out = self.layout.out_shape
        if self.recent_left > 0 and self.recent:
            self.recent_left -= 1
            if rng.random() < RECENT_FRACTION:
                found = self._recent_origin(rng)
                if found is not None:
                    return found
        if self._tables and rng.random() < self.settings.foreground_fraction:
            column, keys, cumulative = self._tables[int(rng.integers(len(self._tables)))]
            pair_index, block = keys[
                int(np.searchsorted(cumulative, rng.random() * cumulative[-1], "right"))
            ]
            pair = self.pairs[pair_index]
            start, stop = pair.block_window(block)
            labels = read_window(pair.labels, start, stop)
            hit = labels > 0 if self.settings.label_mode in INSTANCE_MODES else labels == column
            for origin in pair.held_out:
                local = tuple(
                    slice(max(o - s, 0), max(o + n - s, 0))
                    for o, n, s in zip(origin, out, start, strict=True)
                )
                hit[local] = False
            found = self._origin_on(pair, pair_index, hit, start, rng)
            if found is not None:
                return found
        pair_index = int(rng.choice(len(self.pairs), p=self._areas / self._areas.sum()))
        spatial = self.pairs[pair_index].spatial
        return pair_index, tuple(
            int(rng.integers(n - o + 1)) for n, o in zip(spatial, out, strict=True)
        )

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One augmented training sample.

        Returns
        -------
        image : ndarray of float32, shape (C, *tile_shape)
            Normalised network input.
        targets : ndarray of int64, shape (*out_shape)
            Class per pixel.
        weights : ndarray of float32, shape (*out_shape)
            Loss weight per pixel; 0 where not annotated or held out for validation.
        """
        layout, settings = self.layout, self.settings
        pair_index, origin = self.sample_origin(rng)
        pair = self.pairs[pair_index]
        start, stop = layout.read_bounds(origin)
        scale = settings.augmentation.draw_scale(rng)
        if scale != 1:  # read a larger or smaller region; augmentation resamples it
            start, stop = scaled_region(start, stop, scale)
        image = read_window(pair.image, start, stop, pair.channel_axis)
        image = pair.normalization.apply(image, channel_axis=0 if pair.channel_axis else None)
        if not pair.channel_axis:
            image = image[None]
        labels = read_window(pair.labels, start, stop)
        if labels.dtype == bool:
            labels = labels.view(np.uint8)
        shape = layout.read_shape
        if pair.held_out:
            keep = _keep_mask(pair, start, labels.shape, layout)
            image, (labels, keep) = settings.augmentation(rng, image, [labels, keep], shape)
            keep = layout.crop(keep, [o + layout.margin for o in layout.offsets]).astype(bool)
        else:
            image, (labels,) = settings.augmentation(rng, image, [labels], shape)
            keep = True
        image = layout.crop(image, layout.margin)
        labels = layout.crop(labels, layout.offsets)  # label window plus margin
        targets, annotated = make_targets(labels, settings.label_mode)
        if (
            settings.num_classes is not None
            and targets.size
            and targets.max() >= settings.num_classes
        ):
            # A label value painted after the start that the network has no class for.
            annotated = annotated & (targets < settings.num_classes)
            targets = np.where(targets < settings.num_classes, targets, 0)
        if settings.use_weights:
            weights = (
                np.ones(targets.shape, np.float32)
                if settings.class_weight is None
                else settings.class_weight[targets].astype(np.float32)
            )
            if settings.w0 > 0 and settings.label_mode != "sparse":
                weights += border_weights(
                    object_map(labels, settings.label_mode), settings.w0, settings.sigma
                )
        else:
            weights = np.ones(targets.shape, np.float32)
        weights = layout.crop(weights, layout.margin)
        weights = weights * (layout.crop(annotated, layout.margin) & keep)
        targets = layout.crop(targets, layout.margin)
        return (
            np.ascontiguousarray(image, np.float32),
            np.ascontiguousarray(targets),
            np.ascontiguousarray(weights, np.float32),
        )

    def batch(
        self, rng: np.random.Generator, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``size`` samples stacked: (B, C, *tile), (B, *out) int64, (B, *out) float32.

        Labels painted since the last batch are taken in first (:meth:`take_changes`)."""
        self.take_changes()
        samples = [self.sample(rng) for _ in range(size)]
        return tuple(np.stack(parts) for parts in zip(*samples, strict=True))  # type: ignore[return-value]


def _keep_mask(
    pair: TrainingPair, start: Sequence[int], shape: Sequence[int], layout: TileLayout
) -> np.ndarray:
    """uint8 mask over the read region (``shape`` pixels from ``start``): 0 inside held-out
    validation windows (``layout.out_shape``), 1 elsewhere.

    Positions of the read region outside the image are mirrored, as the image is.
    """
    keep = np.ones(shape, np.uint8)
    if not pair.held_out:
        return keep
    # Mirror the region's coordinates into the image, per axis, then test each window.
    coords = [
        mirror_indices(s, n, size) for s, n, size in zip(start, shape, pair.spatial, strict=True)
    ]
    for origin in pair.held_out:
        inside = [
            (c >= o) & (c < o + w) for c, o, w in zip(coords, origin, layout.out_shape, strict=True)
        ]
        if all(i.any() for i in inside):
            keep[np.ix_(*inside)] = 0
    return keep
