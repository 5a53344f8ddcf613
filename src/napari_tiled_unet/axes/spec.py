"""What a model takes (:class:`ModelSpec`) and the channel selection its model file stores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.model.info import ModelInfo, check_selection


@dataclass(frozen=True)
class ModelSpec:
    """What a model takes: ``in_channels`` channels of ``ndim`` spatial axes.

    Parameters
    ----------
    in_channels : int or None
        Input channels; None: any number (a model still to be trained takes what the data have).
    ndim : {2, 3}
        Spatial axes: ``YX`` or ``ZYX``.
    channels : sequence of int, optional
        The channel selection the model was trained with (stored in its model file): an image
        whose C axis has ``source_channels`` channels is read through it unless the caller
        selects channels.
    source_channels : int, optional
        Channels of the training images the selection was made from (None: unknown, the
        selection is then never applied by itself).
    """

    in_channels: int | None
    ndim: int
    channels: tuple[int, ...] | None = None
    source_channels: int | None = None

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3):
            raise UserInputError(f"ModelSpec.ndim must be 2 or 3, got {self.ndim!r}")
        if self.in_channels is not None and self.in_channels < 1:
            raise UserInputError(f"ModelSpec.in_channels must be >= 1, got {self.in_channels!r}")
        channels, source = check_selection(self.channels, self.source_channels)
        if self.in_channels is not None:
            ModelInfo(channels=channels, source_channels=source).check_network(self.in_channels)
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "source_channels", source)

    @classmethod
    def of(cls, model: Any) -> ModelSpec:
        """The spec of a ``UNet``, a ``UNetConfig``, a ModelSpec or an ``(in_channels, ndim)`` pair.

        A ``UNet``'s stored channel selection (``info.channels`` and ``info.source_channels``,
        see :class:`~napari_tiled_unet.model.info.ModelInfo`) comes with it.
        """
        if isinstance(model, ModelSpec):
            return model
        if isinstance(model, tuple) and len(model) == 2:
            return cls(*model)
        config = getattr(model, "config", model)
        try:
            in_channels, ndim = int(config.in_channels), int(config.ndim)
        except AttributeError:
            raise TypeError(
                f"expected a UNet, a UNetConfig or a ModelSpec, got {type(model).__name__}"
            ) from None
        info = getattr(model, "info", None)
        if info is None:
            return cls(in_channels, ndim)
        return cls(in_channels, ndim, info.channels, info.source_channels)

    @property
    def spatial(self) -> str:
        """``"YX"`` or ``"ZYX"``."""
        return "ZYX"[-self.ndim :]

    def selection_for(self, n_channels: int) -> tuple[int, ...] | None:
        """The stored selection if a C axis of ``n_channels`` is read through it, else None.

        It is, when ``n_channels`` is the training images' channel count (``source_channels``).
        """
        if self.channels is None or n_channels != self.source_channels:
            return None
        return self.channels

    def plain_axes(self, ndim: int | None = None) -> str:
        """The layout the model takes without iteration: ``YX``, ``ZYX``, ``CYX`` or ``CZYX``.

        For ``in_channels=None``, ``ndim`` (the image's number of axes) decides whether a
        channel axis comes first.
        """
        channel = self.in_channels != 1 if self.in_channels is not None else ndim == self.ndim + 1
        if self.source_channels is not None and self.source_channels > 1:
            channel = True  # a selection is read from a C axis
        return ("C" if channel else "") + self.spatial

    def describe(self) -> str:
        """E.g. "a 2D single-channel image with axes YX" (as the engine's errors say)."""
        if self.in_channels == 1:
            return f"a {self.ndim}D single-channel image with axes {self.spatial}"
        if self.in_channels is None:
            return f"a {self.ndim}D image with axes {self.spatial} or C{self.spatial}"
        return f"a {self.ndim}D image with {self.in_channels} channels, axes C{self.spatial}"


def stored_channels(axes: str, shape: Sequence[int], model: Any) -> tuple[int, ...] | None:
    """The model's stored channel selection if it applies to this layout, else None.

    It applies when the layout's C axis has as many channels as the model's training images
    had (:meth:`ModelSpec.selection_for`); the caller then gave no ``channels`` of their own.
    """
    c = axes.find("C")
    if c < 0 or model is None:
        return None
    return ModelSpec.of(model).selection_for(int(shape[c]))


def selection_note(spec: ModelSpec | None) -> str:
    """A sentence on the model's stored channel selection and how to override it ("" if none)."""
    if spec is None or spec.channels is None:
        return ""
    selection, n = list(spec.channels), spec.source_channels
    if n is None:
        trained = (
            f"trained on channels {selection} of images with different channel counts, so it "
            "does not apply that selection by itself"
        )
    else:
        trained = (
            f"trained on channels {selection} of {n}-channel images and applies that selection "
            f"to {n}-channel images by itself"
        )
    return (
        f" The model was {trained}; for other images, select {spec.in_channels} channel(s) "
        "with channels=[...] in Python, --channels on the command line or the channels field "
        "of the Predict widget."
    )
