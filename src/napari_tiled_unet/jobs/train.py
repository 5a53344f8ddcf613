"""The training job: plan layouts, tile and model once, for the command line and the widget.

A face builds a :class:`TrainRequest` (a :class:`~napari_tiled_unet.training.TrainConfig`
plus what depends on the data: dimensions, tile edge, the model to fine-tune, axes, channels
and per-image hints), calls :func:`plan_training` on its images and labels, and runs
:meth:`TrainPlan.trainer`'s ``iter_run``. How each image is read, how deep a 3D tile can be
and what a fine-tuned model takes are decided here only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.jobs.predict import LayoutHints, layout_from_hints

if TYPE_CHECKING:
    from napari_tiled_unet.axes import Layout, ModelSpec
    from napari_tiled_unet.training import TrainConfig, Trainer
    from napari_tiled_unet.training.label_mode import LabelModeChoice

#: Default Y/X edge of a 3D training tile (a 64×64×64 tile already holds 262,144 voxels).
TILE_3D = 64
#: Default edge of a 2D training tile.
TILE_2D = 256


def requested_tile_shape(ndim: int, tile: int | None = None) -> tuple[int, ...]:
    """The tile a user asks for before the data are seen: ``tile`` (or the default) per axis.

    Faces put it in the :class:`~napari_tiled_unet.training.TrainConfig` of a request;
    :func:`plan_training` fits a 3D tile's depth to the volumes.
    """
    edge = tile or (TILE_3D if ndim == 3 else TILE_2D)
    return (int(edge),) * ndim


@dataclass(frozen=True)
class TrainImage:
    """One training or validation image with its labels, as the job reads them.

    Parameters
    ----------
    image, labels : array-like
        The image (any layout) and its labels (the image's axes without C).
    name : str or (str, str)
        How messages name the pair (a layer name, or image and labels names).
    hints : LayoutHints
        Axis hints of the image's file or layer.
    described : (str, str), optional
        How layout errors name the image and the labels, e.g. ``("image layer 'cells' (2
        axes: Y, X)", "labels layer 'masks'")``; default: from ``name``.
    """

    image: Any
    labels: Any
    name: Any = None
    hints: LayoutHints = field(default_factory=LayoutHints)
    described: tuple[str, str] | None = None

    @property
    def image_name(self) -> str:
        """The image's short name (the layer or file name)."""
        if isinstance(self.name, tuple):
            return str(self.name[0])
        return "image" if self.name is None else str(self.name)

    @property
    def labels_name(self) -> str:
        """How messages name the labels."""
        if self.described is not None:
            return self.described[1]
        if isinstance(self.name, tuple):
            return str(self.name[1])
        return "its labels"


def open_training_pair(
    image: str | os.PathLike, labels: str | os.PathLike, name: Any = None
) -> TrainImage:
    """A training pair from two TIFF files, read lazily; the image's TIFF axes are its hint."""
    from napari_tiled_unet.io.tiff import open_tiff, tiff_axes

    hints = LayoutHints(tiff_axes=tiff_axes(image))
    return TrainImage(open_tiff(image), open_tiff(labels), name, hints)


@dataclass(frozen=True)
class TrainRequest:
    """What to train, before the data decide the tile.

    Parameters
    ----------
    config : TrainConfig
        How to train; its ``tile_shape`` (e.g. :func:`requested_tile_shape`) is replaced by
        the planned one.
    ndim : {2, 3}
        A model of YX planes or of ZYX volumes (a fine-tuned model keeps its own).
    tile : int, optional
        Tile edge in pixels; None: :data:`TILE_2D` in 2D, :data:`TILE_3D` in 3D. A 3D tile is
        ``tile`` in Y and X and as deep in Z as the thinnest volume allows.
    model : UNet, path-like or None
        A model to fine-tune, or None for a new network.
    axes : str, optional
        The axes of every image (e.g. ``"YXC"``); None: from hints and shapes.
    channels : sequence of int, optional
        Channels of the C axis to train on, in order.
    """

    config: TrainConfig
    ndim: int = 2
    tile: int | None = None
    model: Any = None
    axes: str | None = None
    channels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3):
            raise UserInputError(f"ndim must be 2 or 3, got {self.ndim!r}")
        if self.tile is not None and (not isinstance(self.tile, int) or self.tile < 1):
            raise UserInputError(f"tile must be a positive integer, got {self.tile!r}")
        if self.channels is not None:
            object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.axes is not None and not self.axes.strip():
            object.__setattr__(self, "axes", None)


@dataclass(frozen=True)
class TrainPlan:
    """A planned training run: layouts read once, the tile chosen, ready to start.

    Attributes
    ----------
    request : TrainRequest
    config : TrainConfig
        The request's config with the planned ``tile_shape`` and its label mode decided.
    pairs, validation : tuple of TrainImage
    layouts, validation_layouts : tuple of Layout
        How each image is read.
    label_mode : LabelModeChoice or None
        The label mode and why (faces show ``label_mode.reason``, and ``label_mode.warning``
        when it is not empty).
    """

    request: TrainRequest
    config: TrainConfig
    pairs: tuple[TrainImage, ...]
    layouts: tuple[Layout, ...]
    validation: tuple[TrainImage, ...] = ()
    validation_layouts: tuple[Layout, ...] = ()
    label_mode: LabelModeChoice | None = None

    def describe(self) -> str:
        """One line per pair: how its image is read."""
        return "; ".join(
            f"{pair.image_name!r}: {layout.describe()}"
            for pair, layout in zip(self.pairs, self.layouts, strict=True)
        )

    def trainer(self) -> Trainer:
        """A :class:`~napari_tiled_unet.training.Trainer` for the plan (checks the data's shapes)."""
        from napari_tiled_unet.training import Trainer

        model = self.request.model
        if isinstance(model, str | os.PathLike):
            from napari_tiled_unet.bioimageio.package import is_package
            from napari_tiled_unet.jobs.predict import load_job_model

            if is_package(model):  # a bioimage.io package: the network it holds
                model = load_job_model(model)
        return Trainer(
            [p.image for p in self.pairs],
            [p.labels for p in self.pairs],
            self.config,
            model=model,
            names=[p.image_name if p.name is None else p.name for p in self.pairs],
            validation=[(p.image, p.labels, p.name) for p in self.validation] or None,
            axes=list(self.layouts),
            validation_axes=list(self.validation_layouts) or None,
            channels=self.request.channels,
        )


def training_spec(request: TrainRequest) -> ModelSpec:
    """What the model to train takes: a fine-tuned model's spec, else any channel count."""
    from napari_tiled_unet.axes import ModelSpec

    if request.model is None:
        channels = None if request.channels is None else len(request.channels)
        return ModelSpec(channels, request.ndim)
    from napari_tiled_unet.jobs.predict import load_job_model

    return ModelSpec.of(load_job_model(request.model))


def read_training_layout(pair: TrainImage, spec: ModelSpec, request: TrainRequest) -> Layout:
    """How ``pair``'s image is read for a model of ``spec``; errors name the labels too."""
    from napari_tiled_unet.axes import AxesError

    labels_shape = tuple(int(n) for n in pair.labels.shape)
    try:
        return layout_from_hints(
            pair.image.shape,
            spec,
            request.axes,
            request.channels,
            pair.hints,
            name=pair.image_name if pair.described is None else pair.described[0],
            labels_shape=labels_shape,
        )
    except AxesError as err:
        raise AxesError(
            f"{err} ({pair.labels_name} have shape {labels_shape}). Name the image's axes "
            "(e.g. ZYX, YXC, TYX), or train a model of the other dimensions (2D/3D).",
            err.readings,
        ) from None


def training_tile(
    request: TrainRequest, layouts: Sequence[Layout], ndim: int | None = None
) -> tuple[int, ...]:
    """The training tile: ``tile`` squared in 2D; in 3D as deep as the thinnest volume allows.

    ``ndim`` (default: the request's) is the model's: a fine-tuned model keeps its own.

    Raises
    ------
    UserInputError
        In 3D, if no tile depth fits the thinnest volume, naming it and what would help.
    """
    config = request.config
    ndim = request.ndim if ndim is None else ndim
    if ndim == 2:
        return requested_tile_shape(2, request.tile)
    from napari_tiled_unet.training.tile_shape import volume_tile_shape

    edge = request.tile or TILE_3D
    network = config.network
    planes = min((layout.spatial_shape[0] for layout in layouts), default=edge)
    try:
        return volume_tile_shape(
            edge,
            planes,
            depth=network.depth,
            padding=network.padding,
            anisotropic_levels=network.anisotropic_levels,
        )
    except ValueError as err:
        thinnest = min(layouts, key=lambda layout: layout.spatial_shape[0])
        message = str(err)
        raise UserInputError(f"{message[0].upper()}{message[1:]} ({thinnest.describe()})") from None


def plan_training(
    request: TrainRequest,
    pairs: Sequence[TrainImage],
    validation: Sequence[TrainImage] = (),
) -> TrainPlan:
    """Read every image's layout, decide the label mode and choose the tile.

    Only the label mode reads pixels: a sample of each labels array
    (:func:`~napari_tiled_unet.training.label_mode.detect_label_mode`), for "auto" and for
    the warning an explicit "semantic" gets on labels of many values.

    Raises
    ------
    UserInputError
        No pairs, an impossible layout (AxesError), a 3D tile that does not fit; in auto
        mode, pairs whose labels read differently or as more than a handful of classes.
    """
    from napari_tiled_unet.training.label_mode import resolve_auto_mode

    if not pairs:
        raise UserInputError("no training data: give at least one image with its labels")
    spec = training_spec(request)
    layouts = tuple(read_training_layout(p, spec, request) for p in pairs)
    validation_layouts = tuple(read_training_layout(p, spec, request) for p in validation)
    tile_shape = training_tile(request, layouts + validation_layouts, spec.ndim)
    named = [(_labels_called(p), p.labels) for p in (*pairs, *validation)]
    config, label_mode = resolve_auto_mode(request.config, named, _fine_tuned_mode(request))
    config = dataclasses.replace(config, tile_shape=tile_shape)
    return TrainPlan(
        request, config, tuple(pairs), layouts, tuple(validation), validation_layouts, label_mode
    )


def _labels_called(pair: TrainImage) -> str:
    """How label-mode messages name a pair's labels."""
    if pair.described is not None or isinstance(pair.name, tuple):
        return pair.labels_name
    return f"labels of {pair.image_name}"


def _fine_tuned_mode(request: TrainRequest) -> str | None:
    """The label mode the model to fine-tune was trained with, when "auto" needs it."""
    if request.model is None or request.config.label_mode != "auto":
        return None
    from napari_tiled_unet.jobs.predict import load_job_model

    return load_job_model(request.model).info.label_mode
