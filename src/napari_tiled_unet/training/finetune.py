"""Fine-tuning: the model a training run starts from, its checks, and what it decides.

A run fine-tunes a copy of a :class:`~napari_tiled_unet.model.unet.UNet` or of a model file.
The model's input channels, dimensions and label mode must fit the run, its classes hold the
labels' classes, and its stored normalisation and class names are kept.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.model.modelfile import load_model
from napari_tiled_unet.model.unet import UNet
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.training.config import TrainConfig
from napari_tiled_unet.training.targets import (
    INSTANCE_MODES,
    default_class_names,
    model_label_mode,
)

logger = logging.getLogger(__name__)

#: What a run can start from: nothing (a new network), a network, or a model file.
ModelSource = UNet | str | os.PathLike | None


def load_base_model(model: ModelSource) -> tuple[UNet | None, str | None]:
    """The model to fine-tune, as a copy on CPU, and how the run's record names it.

    Parameters
    ----------
    model : UNet, path-like or None
        None: a new network is trained.

    Returns
    -------
    model : UNet or None
        A copy (the given network is not changed), or the model file's network.
    source : str or None
        The model file's path, "UNet object", or None.

    Raises
    ------
    TypeError
        If ``model`` is none of those.
    """
    if model is None:
        return None, None
    if isinstance(model, str | os.PathLike):
        return load_model(model), str(Path(model))
    if isinstance(model, UNet):
        return copy.deepcopy(model).cpu(), "UNet object"
    raise TypeError(f"model must be None, a UNet or a model file path, got {type(model).__name__}")


def check_base_model(model: UNet, config: TrainConfig, channels: int, image_name: str) -> None:
    """Raise a ValueError unless ``model`` can be fine-tuned on images of ``channels`` channels.

    Parameters
    ----------
    model : UNet
        The model to fine-tune.
    config : TrainConfig
        The run's settings (``tile_shape``, ``label_mode``, ``normalization``).
    channels : int
        Channels of the training images.
    image_name : str
        The first training image, for messages.
    """
    if model.config.ndim != config.ndim:
        raise UserInputError(
            f"the model to fine-tune is {model.config.ndim}D but tile_shape "
            f"{config.tile_shape} is {config.ndim}D"
        )
    if model.config.in_channels != channels:
        raise UserInputError(
            f"the model to fine-tune takes {model.config.in_channels} input channel(s) but "
            f"{image_name} has {channels}; fine-tune with images of "
            f"{model.config.in_channels} channel(s) or train a new model"
        )
    stored_mode = model.info.label_mode
    if stored_mode is not None and stored_mode != model_label_mode(config.label_mode):
        also = (
            " (or 'sparse-instance' for partial annotations)" if stored_mode == "instance" else ""
        )
        raise UserInputError(
            f"the model to fine-tune was trained with label_mode={stored_mode!r} but "
            f"TrainConfig.label_mode is {config.label_mode!r}; use the same mode{also}"
        )
    if config.label_mode in INSTANCE_MODES and model.config.num_classes != 3:
        raise UserInputError(
            f"instance training needs a 3-class model (background, interior, boundary); "
            f"the model to fine-tune has {model.config.num_classes} classes"
        )
    stored = model.info.normalization
    if stored is not None and config.normalization is not None and stored != config.normalization:
        raise UserInputError(
            f"the model to fine-tune normalises its input with {stored} but "
            f"TrainConfig.normalization is {config.normalization}; leave "
            f"normalization=None to use the model's, or set it to the model's"
        )


def fine_tune_config(config: TrainConfig, base: UNet | None) -> tuple[TrainConfig, str]:
    """``config`` with the learning rate of the run, and a line saying so when fine-tuning.

    A run that starts from a model uses :meth:`TrainConfig.run_learning_rate`: unless set,
    :data:`~napari_tiled_unet.training.config.FINETUNE_LR`, lower than a new network's.

    Returns
    -------
    config : TrainConfig
        With ``learning_rate`` the rate the run uses.
    message : str
        E.g. "fine-tuning: learning rate 0.0001 (lower default for fine-tuning)"; "" for a
        new network.
    """
    if base is None:
        return config, ""
    rate, why = config.run_learning_rate(fine_tuning=True)
    if rate != config.learning_rate:
        config = dataclasses.replace(config, learning_rate=rate)
    message = f"fine-tuning: learning rate {rate:g} ({why})"
    logger.info(message)
    return config, message


def run_normalization(base: UNet | None, config: TrainConfig) -> Normalization:
    """The normalisation to train with: the fine-tuned model's own, else the config's, else
    percentiles (1, 99.8)."""
    if base is not None and base.info.normalization is not None:
        return base.info.normalization
    return config.normalization or Normalization()


def run_num_classes(base: UNet | None, num_classes: int) -> int:
    """The network's classes for labels of ``num_classes`` classes: the fine-tuned model's.

    Raises
    ------
    ValueError
        If the labels hold more classes than the model to fine-tune has.
    """
    if base is None:
        return num_classes
    model_classes = base.config.num_classes
    if num_classes > model_classes:
        raise UserInputError(
            f"the labels hold {num_classes} classes but the model to fine-tune has "
            f"{model_classes}; fine-tune with labels of at most {model_classes} classes "
            f"or train a new model"
        )
    return model_classes


def run_class_names(base: UNet | None, config: TrainConfig, num_classes: int) -> list[str]:
    """The class names to store: the config's, else the fine-tuned model's, else the mode's
    defaults.

    Raises
    ------
    ValueError
        If ``config.class_names`` has not one name per class.
    """
    names: Sequence[str] | None = config.class_names
    if names is None and base is not None:
        names = base.info.class_names
    if names is None:
        names = default_class_names(config.label_mode, num_classes)
    if len(names) != num_classes:
        raise UserInputError(
            f"TrainConfig.class_names has {len(names)} names but the network has "
            f"{num_classes} classes"
        )
    return list(names)
