"""Labels painted while training runs: forward each stroke's bounding box to the Trainer.

On the GUI thread only the box of each paint is computed (from napari's ``paint`` event,
emitted once per finished stroke or fill); the Trainer queues it and its sampler re-counts the
touched blocks in the training thread (:meth:`napari_tiled_unet.training.Trainer.labels_changed`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet._napari._layers import layer_data

if TYPE_CHECKING:
    from napari.layers import Labels

    from napari_tiled_unet.training import Trainer


def paint_box(atom: Any, shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(start, stop) of one edit of a Labels layer's ``paint`` event, or None if it is empty.

    An edit is either a masked edit with a ``slice_key`` (brush, fill, polygon) or a
    ``(indices, old values, new values)`` tuple (``Labels.data_setitem``).
    """
    key = getattr(atom, "slice_key", None)
    if key is not None:
        start, stop = [], []
        for k, n in zip(key, shape, strict=False):
            if isinstance(k, slice):
                a, b, _ = k.indices(n)
            else:
                a, b = int(k), int(k) + 1
            start.append(a)
            stop.append(b)
        return tuple(start), tuple(stop)
    indices = atom[0]
    if not len(indices) or np.size(indices[0]) == 0:
        return None
    return (
        tuple(int(np.min(i)) for i in indices),
        tuple(int(np.max(i)) + 1 for i in indices),
    )


class LabelsFollower:
    """Forwards the paint of some Labels layers to a Trainer while it runs.

    Parameters
    ----------
    trainer : Trainer
    layers : iterable of Labels
        The training pairs' labels layers.

    Attributes
    ----------
    boxes : int
        Painted boxes handed to the Trainer so far.
    """

    def __init__(self, trainer: Trainer, layers: Iterable[Labels]):
        self.trainer = trainer
        self.layers = list(dict.fromkeys(layers))
        self.boxes = 0
        for layer in self.layers:
            layer.events.paint.connect(self._painted)

    def _painted(self, event) -> None:
        layer = event.source
        data = layer_data(layer)
        for atom in event.value:
            box = paint_box(atom, data.shape)
            if box is not None:
                self.boxes += bool(self.trainer.labels_changed(data, *box))

    def close(self) -> None:
        """Stop following the layers."""
        for layer in self.layers:
            layer.events.paint.disconnect(self._painted)
        self.layers = []
