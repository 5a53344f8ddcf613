"""What the Train widget starts from: a new network, the bundled model, a model trained in this
session, or a model file (``.pt`` or a bioimage.io package).

Fine-tuning keeps the model's architecture and stored normalisation, so the architecture
fields are disabled; the learning rate default becomes
:data:`~napari_tiled_unet.training.config.FINETUNE_LR` and the note under the choice says so.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.training.config import FINETUNE_LR

if TYPE_CHECKING:
    from napari_tiled_unet._napari._models import TrainedModels

NEW_NETWORK = "new network"
BUNDLED_MODEL = "bundled default model"
MODEL_FILE = "model file…"
TRAINED = "trained: "
START_HELP = (
    "new network: train from scratch with the sizes under 'advanced settings'. Otherwise "
    "fine-tune a copy of a model: the bundled nuclei model, one trained in this session, or a "
    "model file (*.pt, or a bioimage.io package exported by this plugin); it keeps its "
    "architecture, classes and input normalisation."
)
#: Fields that describe a new network's architecture (a fine-tuned model keeps its own).
ARCHITECTURE_FIELDS = ("dimensions", "anisotropic_levels", "base_channels", "depth")


def start_choices(trained: TrainedModels) -> list[str]:
    """The start-from choices: new, bundled, each trained model, a model file."""
    return [NEW_NETWORK, BUNDLED_MODEL, *(TRAINED + n for n in trained.names()), MODEL_FILE]


def start_model(choice: str, path: Any, trained: TrainedModels) -> Any:
    """The ``model`` of a :class:`~napari_tiled_unet.jobs.TrainRequest` for a start choice.

    Returns None (a new network), the bundled model's path, a model file path, or a
    :class:`~napari_tiled_unet.model.unet.UNet` trained in this session.

    Raises
    ------
    UserInputError
        If "model file…" is chosen without a file, or a trained model is gone.
    """
    if choice == NEW_NETWORK:
        return None
    if choice == BUNDLED_MODEL:
        from napari_tiled_unet.model.modelfile import default_model_path

        return default_model_path()
    if choice == MODEL_FILE:
        if path is None or str(path) in ("", "."):
            raise UserInputError(
                f"No model file to fine-tune. Pick a *.pt file or a bioimage.io package in "
                f"'model file', or choose '{NEW_NETWORK}' in 'start from'."
            )
        return Path(os.fspath(path))
    name = choice.removeprefix(TRAINED)
    try:
        return trained.get(name)
    except KeyError:
        raise UserInputError(
            f"The model 'trained: {name}' is no longer there; choose another in 'start from'."
        ) from None


def start_label_mode(choice: str, trained: TrainedModels) -> str | None:
    """The label mode of the model a start choice fine-tunes: known for the bundled model and
    models trained in this session; None for a new network or a model file (not read on
    every edit)."""
    if choice == BUNDLED_MODEL:
        return _bundled_label_mode()
    if choice.startswith(TRAINED) and choice.removeprefix(TRAINED) in trained.names():
        return trained.get(choice.removeprefix(TRAINED)).info.label_mode
    return None


@functools.cache
def _bundled_label_mode() -> str:
    from napari_tiled_unet.model.modelfile import default_model_path, load_model

    return load_model(default_model_path()).info.label_mode


def apply_start_choice(widget: Any, choice: str, new_rate: float) -> None:
    """Set the widget's fields for a start choice: architecture fields on or off, the file
    field shown, the learning rate default swapped, and a note saying what happens.

    A learning rate the user typed (neither default) is left alone.
    """
    fine_tuning = choice != NEW_NETWORK
    for name in ARCHITECTURE_FIELDS:
        getattr(widget, name).enabled = not fine_tuning
    if not fine_tuning:
        widget.anisotropic_levels.enabled = widget.dimensions.value == "3D"
    widget.start_file.visible = choice == MODEL_FILE
    defaults = {f"{new_rate:g}", f"{FINETUNE_LR:g}"}
    if widget.learning_rate.value.strip() in defaults:
        widget.learning_rate.value = f"{FINETUNE_LR if fine_tuning else new_rate:g}"
    why = (
        f"lower than a new network's {new_rate:g}"
        if FINETUNE_LR < new_rate
        else "as for a new network: lower rates fine-tuned worse on nuclei of another size"
    )
    widget.start_note.value = (
        f"Fine-tuning: architecture and input normalisation from the model; learning rate "
        f"{FINETUNE_LR:g} by default ({why})."
        if fine_tuning
        else ""
    )
    widget.start_note.visible = fine_tuning
