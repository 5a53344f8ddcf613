"""What a model file says about its network beyond the architecture: :class:`ModelInfo`."""

from __future__ import annotations

import copy
import dataclasses
import operator
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.normalization import Normalization

LABEL_MODES = ("semantic", "instance", "sparse")


class ModelInfoError(UserInputError):
    """Model information that is inconsistent (with itself or with the network)."""


@dataclass(frozen=True)
class ModelInfo:
    """Typed model information, stored as plain data in model files.

    Every field is optional: a bare :class:`~napari_tiled_unet.model.unet.UNet` has none,
    model files from older versions lack the newer ones.

    Parameters
    ----------
    normalization : Normalization, optional
        How raw intensities become network input. None: the image is fed as float32.
    label_mode : {"semantic", "instance", "sparse"}, optional
        How the training labels were read; "instance" models predict object ids by default.
    class_names : tuple of str, optional
        One name per output class.
    axes : str, optional
        The network's input axes, e.g. ``"YX"``, ``"CYX"``, ``"ZYX"``.
    tile_shape : tuple of int, optional
        Input tile shape the network was trained with (pixels).
    channels : tuple of int, optional
        The channels of the training images' C axis the model was trained on, in order;
        prediction applies them by itself to images with ``source_channels`` channels.
    source_channels : int, optional
        How many channels the training images had (None: unknown or they differed).
    training : mapping, optional
        The training record (config, seed, steps, best step and scores, validation, ...),
        plain data as written by :class:`~napari_tiled_unet.training.Trainer`.
    object_diameter : float, optional
        Median diameter (pixels; of a disk or ball of the same area or volume) of the
        objects in the training labels. Predicting with ``diameter=`` rescales an image so
        that its objects get this size; instance output derives its separation settings
        from it (:class:`~napari_tiled_unet.separation.InstanceOptions`).
    min_object_size : int, optional
        Instance output removes objects smaller than this many pixels (set from the
        training labels).
    object_diameter_range : (float, float), optional
        Object diameters (pixels) the model was trained to see, for a model trained with
        scale augmentation: the training objects' 1st to 99th percentile diameter widened by
        the augmentation's factor. Instance output then measures each image's object size
        within it (:meth:`~napari_tiled_unet.separation.InstanceOptions.for_image`) instead
        of assuming ``object_diameter``, and ``diameter="auto"`` rescales only images whose
        objects fall outside it.
    package_version : str, optional
        Version of napari-tiled-unet that wrote the file (set when a file is loaded).
    extra : mapping
        Entries this version does not know, kept so that saving a file again keeps them.
    """

    normalization: Normalization | None = None
    label_mode: str | None = None
    class_names: tuple[str, ...] | None = None
    axes: str | None = None
    tile_shape: tuple[int, ...] | None = None
    channels: tuple[int, ...] | None = None
    source_channels: int | None = None
    training: Mapping[str, Any] | None = None
    object_diameter: float | None = None
    min_object_size: int | None = None
    object_diameter_range: tuple[float, float] | None = None
    package_version: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if isinstance(self.normalization, Mapping):
            set_(self, "normalization", Normalization.from_dict(self.normalization))
        if self.normalization is not None and not isinstance(self.normalization, Normalization):
            raise ModelInfoError(
                f"normalization must be a Normalization or its dict, got "
                f"{type(self.normalization).__name__}"
            )
        if self.label_mode is not None and self.label_mode not in LABEL_MODES:
            raise ModelInfoError(
                f"label_mode must be one of {LABEL_MODES}, got {self.label_mode!r}"
            )
        if self.class_names is not None:
            if isinstance(self.class_names, str) or not isinstance(self.class_names, Sequence):
                raise ModelInfoError(
                    f"class_names must be a list of names, got {self.class_names!r}"
                )
            set_(self, "class_names", tuple(str(n) for n in self.class_names))
        if self.axes is not None and not isinstance(self.axes, str):
            raise ModelInfoError(f"axes must be a string such as 'CYX', got {self.axes!r}")
        if self.tile_shape is not None:
            set_(self, "tile_shape", _ints("tile_shape", self.tile_shape))
        channels, source = check_selection(self.channels, self.source_channels)
        set_(self, "channels", channels)
        set_(self, "source_channels", source)
        check_object_size(self.object_diameter, self.min_object_size)
        if self.object_diameter is not None:
            set_(self, "object_diameter", float(self.object_diameter))
        if self.min_object_size is not None:
            set_(self, "min_object_size", int(self.min_object_size))
        if self.object_diameter_range is not None:
            set_(self, "object_diameter_range", _diameter_range(self.object_diameter_range))
        if self.training is not None and not isinstance(self.training, Mapping):
            raise ModelInfoError(f"training must be a dict, got {type(self.training).__name__}")
        if self.training is not None:
            plain_data(self.training, "training")  # refused here, not when a file is written
        if not isinstance(self.extra, Mapping):
            raise ModelInfoError(f"extra must be a dict, got {type(self.extra).__name__}")
        plain_data(self.extra, "metadata")
        set_(self, "extra", dict(self.extra))

    @property
    def input_normalization(self) -> Normalization:
        """The normalisation to apply: the stored one, else mode "none" (float32 as it is)."""
        return self.normalization if self.normalization is not None else Normalization("none")

    @property
    def predicts_instances(self) -> bool:
        """Whether the model was trained on instance labels (its default output is object ids)."""
        return self.label_mode == "instance"

    @property
    def best_scores(self) -> dict[str, float]:
        """Validation scores of the kept model ({} if the file has no training record)."""
        return dict((self.training or {}).get("best_scores") or {})

    def check_network(self, in_channels: int) -> None:
        """Raise a :class:`ModelInfoError` unless the information fits a network of ``in_channels``."""
        if self.channels is not None and len(self.channels) != in_channels:
            raise ModelInfoError(
                f"the stored channel selection {list(self.channels)} has "
                f"{len(self.channels)} channel(s) but the model takes {in_channels}"
            )

    def replace(self, **changes: Any) -> ModelInfo:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a model file (see :func:`plain_data`); fields that are None are left
        out."""
        data: dict[str, Any] = dict(copy.deepcopy(self.extra))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("extra", "package_version") or value is None:
                continue
            if isinstance(value, Normalization):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = copy.deepcopy(dict(value))
            data[f.name] = value
        return plain_data(data, "metadata")

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any] | None, package_version: str | None = None
    ) -> ModelInfo:
        """Read the ``metadata`` entry of a model file (any version); unknown keys go to ``extra``."""
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "package_version"}
        known = {k: data.pop(k) for k in list(data) if k in names}
        return cls(**known, package_version=package_version, extra=data)


def check_object_size(diameter: Any, min_size: Any) -> None:
    """Raise a :class:`ModelInfoError` unless the stored object sizes are positive numbers."""
    if diameter is not None and (
        isinstance(diameter, bool)
        or not isinstance(diameter, int | float)
        or not 0 < diameter < float("inf")
    ):
        raise ModelInfoError(f"object_diameter must be a positive number, got {diameter!r}")
    if min_size is not None and (
        isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0
    ):
        raise ModelInfoError(f"min_object_size must be a non-negative integer, got {min_size!r}")


def check_selection(
    channels: Sequence[int] | None, source_channels: int | None
) -> tuple[tuple[int, ...] | None, int | None]:
    """A stored channel selection as ``(channels, source_channels)``, checked.

    Raises
    ------
    ModelInfoError
        If the entries are not channel numbers or do not fit each other.
    """
    if channels is None:
        if source_channels is not None:
            raise ModelInfoError(
                f"source_channels {source_channels!r} is stored without a channel selection"
            )
        return None, None
    try:
        selected = tuple(operator.index(k) for k in channels)
        source = None if source_channels is None else operator.index(source_channels)
    except TypeError:
        raise ModelInfoError(
            f"the stored channel selection must be channel numbers and source_channels a "
            f"number, got channels={channels!r}, source_channels={source_channels!r}"
        ) from None
    if not selected or min(selected) < 0:
        raise ModelInfoError(
            f"the stored channel selection {list(selected)} is not channel numbers"
        )
    if source is not None and max(selected) >= source:
        raise ModelInfoError(
            f"the stored channel selection {list(selected)} does not fit images of {source} "
            f"channel(s) (source_channels)"
        )
    return selected, source


def plain_data(value: Any, where: str = "metadata") -> Any:
    """``value`` as the plain data a model file stores: None, bool, int, float, str, lists and
    dicts with str or int keys.

    numpy scalars and arrays (and anything else with ``tolist()``, e.g. a tensor) become
    numbers and lists, tuples become lists and paths strings, so that every file
    :func:`~napari_tiled_unet.model.modelfile.save_model` writes can be read back with
    ``torch.load(..., weights_only=True)``.

    Raises
    ------
    ModelInfoError
        For anything else (an object, a set, a function), naming where it sits, e.g.
        ``metadata['training']['when']``.
    """
    if value is None or type(value) in (bool, int, float, str):
        return value
    for kind in (bool, int, float, str):  # subclasses: numpy.float64, numpy.str_, enums
        if isinstance(value, kind):
            return kind.__str__(value) if kind is str else kind(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            key = key.tolist() if hasattr(key, "tolist") else key
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise ModelInfoError(
                    f"{where} has a key {key!r} ({type(key).__name__}); a model file stores "
                    "dicts with string keys"
                )
            out[key] = plain_data(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [plain_data(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and callable(value.tolist):
        return plain_data(value.tolist(), where)
    raise ModelInfoError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which a model file "
        "cannot store; give plain data (numbers, strings, lists, dicts)"
    )


def _diameter_range(values: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ModelInfoError(
            f"object_diameter_range must be two numbers (low, high), got {values!r}"
        ) from None
    if not 0 < low <= high < float("inf"):
        raise ModelInfoError(
            f"object_diameter_range must be 0 < low <= high pixels, got {values!r}"
        )
    return low, high


def _ints(name: str, values: Any) -> tuple[int, ...]:
    try:
        return tuple(operator.index(v) for v in values)
    except TypeError:
        raise ModelInfoError(f"{name} must be a list of integers, got {values!r}") from None
