"""The functional entry points of training: :func:`iter_train` (a generator) and :func:`train`.

Both make a :class:`~napari_tiled_unet.training.loop.Trainer` and run it once.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from napari_tiled_unet.events import Progress, run_to_completion
from napari_tiled_unet.model.unet import UNet
from napari_tiled_unet.training.config import TrainConfig
from napari_tiled_unet.training.finetune import ModelSource
from napari_tiled_unet.training.loop import Trainer


def iter_train(
    images: Any,
    labels: Any,
    config: TrainConfig | None = None,
    *,
    model: ModelSource = None,
    names: Sequence[Any] | None = None,
    **kwargs: Any,
) -> Generator[Progress, None, UNet]:
    """Train a U-Net, yielding progress; the generator returns the best model.

    Equivalent to ``yield from Trainer(...).iter_run()``; see :class:`Trainer` for the
    parameters (``validation``, ``axes``, ``validation_axes``, ``channels`` as keywords),
    e.g. ``iter_train(rgb_images, labels, config, axes="YXC")``. To keep the best model
    after stopping early (``close()``), create the :class:`Trainer` yourself and read
    :attr:`Trainer.best_model`, or set ``config.checkpoint_path``.

    Yields
    ------
    Progress
        ``stage="train"``, ``done=step``, ``total=config.iterations``,
        ``metrics={"loss": ..., and after a validation "val_iou", "val_f1", "val_loss"}``.

    Returns
    -------
    UNet
        The best model by validation score, on CPU, in eval mode, with its ``info``
        (:class:`~napari_tiled_unet.model.info.ModelInfo`: normalization, label_mode,
        class_names, axes, tile_shape, channels and source_channels, training).
    """
    trainer = Trainer(images, labels, config, model=model, names=names, **kwargs)
    return (yield from trainer.iter_run())


def train(
    images: Any,
    labels: Any,
    config: TrainConfig | None = None,
    *,
    model: ModelSource = None,
    names: Sequence[Any] | None = None,
    **kwargs: Any,
) -> UNet:
    """Blocking form of :func:`iter_train`: same arguments, returns the best model.

    E.g. ``train(movie, movie_labels, config, axes="TCYX", channels=[0, 2])``.
    """
    return run_to_completion(iter_train(images, labels, config, model=model, names=names, **kwargs))
