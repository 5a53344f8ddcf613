"""Training: tile sampling, augmentation, weight maps, loss and the training loop.

``iter_train`` / ``train`` are the functional entry points; :class:`Trainer` also gives access
to the best model after an early stop. ``TrainConfig`` (with its ``NetworkSpec`` and
``AugmentSpec``) imports without torch (so a widget can build one cheaply); the rest is loaded
on first use. None of this imports Qt or napari.

Modules: ``config`` (settings), ``tile_shape`` (3D training tiles), ``label_mode`` (what "auto" decides from the labels: instance
ids or semantic classes), ``pairs`` (an image and its labels, reading windows),
``inputs`` (a run's arguments as pairs), ``scan`` (one pass over each pair), ``sampler``
(random augmented samples), ``augment``, ``targets``, ``weights``, ``loss``, ``validation``
(held-out windows and their scores), ``finetune`` (the model a run starts from), ``optim``
(one optimisation step), ``step`` (how the step is fed: memory format, pinned batches, mixed
precision), ``prefetch`` (batches drawn between steps or ahead in a thread), ``presets`` (named
starting configurations, ``TrainConfig.preset("interactive")``), ``record`` (the trained
model's information), ``loop`` (the :class:`Trainer`), ``session`` (what *Continue* resumes
with) and ``functional`` (``iter_train``, ``train``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from napari_tiled_unet.config import NetworkSpec
from napari_tiled_unet.training.config import AugmentSpec, TrainConfig

__all__ = ["AugmentSpec", "NetworkSpec", "TrainConfig", "Trainer", "iter_train", "train"]

if TYPE_CHECKING:
    from napari_tiled_unet.training.functional import iter_train, train
    from napari_tiled_unet.training.loop import Trainer


def __getattr__(name: str):
    if name == "Trainer":
        return getattr(importlib.import_module("napari_tiled_unet.training.loop"), name)
    if name in ("iter_train", "train"):
        return getattr(importlib.import_module("napari_tiled_unet.training.functional"), name)
    raise AttributeError(f"module 'napari_tiled_unet.training' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
