"""Models trained in this napari session, shared by the widgets of one viewer."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from psygnal import Signal

if TYPE_CHECKING:
    from napari.viewer import Viewer

    from napari_tiled_unet.model.unet import UNet

#: One registry per viewer; it goes away with its viewer.
_REGISTRIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class TrainedModels:
    """Models trained in one viewer, by name, in the order they were added.

    The Train widget adds each model it finishes; the Predict widget offers them as
    ``"trained: <name>"`` model choices and listens to :attr:`changed`.
    """

    changed = Signal()

    def __init__(self) -> None:
        self._models: dict[str, UNet] = {}

    def add(self, name: str, model: UNet) -> str:
        """Store ``model`` under ``name`` (made unique with a ``" [n]"`` suffix); return the name."""
        unique, n = name, 1
        while unique in self._models:
            unique, n = f"{name} [{n}]", n + 1
        self._models[unique] = model
        self.changed.emit()
        return unique

    def put(self, name: str, model: UNet) -> None:
        """Store ``model`` under ``name``, replacing the model stored there (a run continued)."""
        self._models[name] = model
        self.changed.emit()

    def get(self, name: str) -> UNet:
        """The model stored under ``name``; KeyError if there is none."""
        return self._models[name]

    def names(self) -> list[str]:
        """Names of the stored models, oldest first."""
        return list(self._models)

    def __len__(self) -> int:
        return len(self._models)


def trained_models(viewer: Viewer) -> TrainedModels:
    """The :class:`TrainedModels` of ``viewer``, created on first use."""
    registry = _REGISTRIES.get(viewer)
    if registry is None:
        registry = _REGISTRIES[viewer] = TrainedModels()
    return registry
