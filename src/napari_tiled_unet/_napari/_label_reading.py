"""The Train widget's *labels are* choice: "auto" reads the mode from the labels layers.

The reading and the decision are the core's (:mod:`napari_tiled_unet.training.label_mode`:
one rule, shared with the command line and the API); this module turns them into what the
widget shows.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.training.config import TRAIN_LABEL_MODES
from napari_tiled_unet.training.label_mode import decide_label_mode, read_label_modes

AUTO = "auto"
LABEL_MODE_CHOICES = TRAIN_LABEL_MODES
AUTO_READ_PIXELS = 4096 * 4096
"""Labels with more pixels are not read on every edit (it would stall the viewer)."""


def needs_reading(chosen: str) -> bool:
    """Whether the choice ``chosen`` reads the labels (``auto``, or ``semantic`` for a warning)."""
    return chosen in (AUTO, "semantic")


@dataclass(frozen=True)
class LabelReading:
    """The label mode a training run will use and what *reads as* says about it.

    Attributes
    ----------
    mode : str
        An explicit mode (``semantic``, ``instance`` or ``sparse``).
    text : str
        The reason for an ``auto`` choice and any warning (e.g. too many classes); may be "".
    """

    mode: str
    text: str


class BlankLayers:
    """The Labels layers that were blank (all 0) when the viewer first showed them to the widget.

    Such a layer holds what the user painted in this viewer, where 0 means "not painted yet":
    "auto" reads it as sparse (see :func:`read_label_mode`), the mode of the train-while-you-
    paint loop. Layers too large to check cheaply (over :data:`AUTO_READ_PIXELS`) or not held
    in memory are not counted as blank.
    """

    def __init__(self, viewer: Any):
        from napari.layers import Labels

        self._kind = Labels
        self._events = viewer.layers.events
        self._blank: weakref.WeakSet = weakref.WeakSet()
        for layer in viewer.layers:
            self._check(layer)
        self._events.inserted.connect(self._inserted)

    def _inserted(self, event: Any) -> None:
        self._check(event.value)

    def _check(self, layer: Any) -> None:
        data = layer.data if isinstance(layer, self._kind) else None
        if isinstance(data, np.ndarray) and data.size <= AUTO_READ_PIXELS and not data.any():
            self._blank.add(layer)

    def started_blank(self, layer: Any) -> bool:
        """Whether ``layer`` was blank when the widget first saw it."""
        return layer in self._blank

    def disconnect(self) -> None:
        """Stop following the viewer's layers."""
        self._events.inserted.disconnect(self._inserted)


def read_label_mode(
    chosen: str,
    labels: Sequence[tuple[str, Any]],
    *,
    size_limit: int | None = AUTO_READ_PIXELS,
    painted: bool = False,
    base_mode: str | None = None,
) -> LabelReading:
    """The mode for ``chosen`` and the named ``labels`` arrays (one per training pair).

    Parameters
    ----------
    chosen : str
        The widget's choice: ``auto`` or an explicit mode.
    labels : sequence of (str, array-like)
        Each pair's labels layer name and data.
    size_limit : int, optional
        Labels with more pixels are not read (``auto`` then raises, naming the choice to
        make); None reads every size. Default: :data:`AUTO_READ_PIXELS`.
    painted : bool
        Every labels layer started blank in this viewer (:class:`BlankLayers`): ``auto``
        reads them as painted annotation, 0 = not annotated: ``sparse``, or
        ``sparse-instance`` (1 = background, other values one object each) when
        ``base_mode`` is ``instance``.
    base_mode : str, optional
        The label mode of the model to fine-tune, where known.

    Raises
    ------
    UserInputError
        If ``auto`` cannot decide: labels too large to read here, pairs that read as
        different modes, or labels that read as more than a handful of classes.
    """
    if not needs_reading(chosen):
        return LabelReading(chosen, "")
    if chosen == AUTO and painted and labels:
        mode = "sparse-instance" if base_mode == "instance" else "sparse"
        meaning = (
            "1 = background, every other value one object (the instance model fine-tunes)"
            if mode == "sparse-instance"
            else "each other value a class"
        )
        return LabelReading(
            mode,
            f"auto → {mode} (painted in this viewer: 0 = not annotated, {meaning}).",
        )
    arrays = []
    for name, data in labels:
        if size_limit is not None and int(np.prod(data.shape)) > size_limit:
            if chosen == AUTO:
                raise UserInputError(
                    f"Labels layer {name!r} is too large to read its mode on every edit; "
                    "choose 'labels are' semantic, instance or sparse."
                )
            return LabelReading(chosen, "")
        arrays.append((repr(name), np.asarray(data)))
    readings = read_label_modes(arrays)
    choice = decide_label_mode(chosen, readings)  # the core's rule: refusals, disagreement
    if chosen == "semantic":
        return LabelReading(chosen, choice.warning)
    reasons = "; ".join(f"{name}: {reading.reason}" for name, reading in readings)
    return LabelReading(choice.mode, f"auto → {choice.mode} ({reasons}).")
