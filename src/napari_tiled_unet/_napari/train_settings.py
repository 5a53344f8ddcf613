"""The Train widget's settings: the primary fields, and the advanced ones in a section of their own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)

from napari_tiled_unet._napari._label_reading import LABEL_MODE_CHOICES
from napari_tiled_unet._napari._preview import PREVIEW_INTERVAL
from napari_tiled_unet._napari._start_from import NEW_NETWORK, START_HELP
from napari_tiled_unet.device import DEVICES

if TYPE_CHECKING:
    from napari_tiled_unet.training import TrainConfig

LABEL_MODES = LABEL_MODE_CHOICES
LABEL_MODE_HELP = (
    "auto: read from the labels (many ids, each one blob: instance; a few values: semantic). "
    "semantic: every pixel holds a class (0 = background). instance: each value > 0 is one "
    "object; the model learns background / interior / boundary so touching objects separate. "
    "sparse: scribbles; 0 = not annotated, value k = class k-1. sparse-instance: a few whole "
    "objects to fine-tune an instance model; 0 = not annotated, 1 = background, 2, 3, ... = "
    "one object each (press M for a new label before each)."
)
DIMENSIONS = ("2D", "3D")
DIMENSIONS_HELP = (
    "2D: a model of YX planes; Z stacks and time series train plane by plane (fast, works on "
    "a CPU, suits stacks whose Z spacing is much coarser than X/Y and labels painted on a few "
    "planes). 3D: a model of ZYX volumes that sees neighbouring planes (needs labelled "
    "volumes at least one tile deep, and a GPU for real sizes)."
)


def settings_form(defaults: TrainConfig) -> tuple[Container, Container]:
    """The Train widget's settings form and its (hidden) advanced section, set to ``defaults``.

    The form holds the training pairs, the label mode and what the layers read as, the
    number of iterations, the model name, what to start from (a new network or a model to
    fine-tune), the live preview switch and a ``show_advanced`` check box; the advanced
    section (inside the form, hidden until that box is ticked) holds axes, channels, 2D/3D,
    network size, tile, batch, learning rate, augmentation, device and the preview interval.
    """
    advanced = Container(
        name="advanced",
        label="",
        visible=False,
        widgets=[
            LineEdit(
                name="axes",
                value="",
                tooltip="The image layers' axes, e.g. YX, ZYX, CYX, TZCYX, YXC (RGB); labels "
                "have the same axes without C. Empty: from the layers. Axes the model does "
                "not take (T; Z for a 2D model) become separate training planes.",
            ),
            LineEdit(
                name="channels",
                value="",
                tooltip="Channels of the C axis to train on, e.g. 0 or 2,0,1; empty: all "
                "(an RGB image trains a 3-channel model)",
            ),
            ComboBox(
                name="dimensions",
                choices=DIMENSIONS,
                value="2D",
                tooltip=DIMENSIONS_HELP,
            ),
            SpinBox(
                name="anisotropic_levels",
                label="XY-only levels",
                value=0,
                min=0,
                max=6,
                enabled=False,
                tooltip="3D only: the first this many levels pool in Y and X only, for "
                "stacks whose Z spacing is coarser than X/Y (1 for about 2x, 2 for about "
                "4x). Tiles then need fewer planes.",
            ),
            SpinBox(
                name="base_channels",
                label="model size",
                value=defaults.network.base_channels,
                min=1,
                max=512,
                tooltip="Feature channels of the first level (64 in the paper); "
                "more is more accurate and slower",
            ),
            SpinBox(
                name="depth",
                value=defaults.network.depth,
                min=1,
                max=6,
                tooltip="Pooling steps; tiles must be multiples of 2**depth",
            ),
            SpinBox(
                name="tile_size",
                label="tile size",
                value=defaults.tile_shape[-1],
                min=8,
                max=4096,
                step=16,
                tooltip="Edge of the training tiles in pixels (network input); a 3D "
                "tile is this in Y and X, and as deep as the volumes allow in Z",
            ),
            SpinBox(name="batch_size", label="batch size", value=defaults.batch_size, min=1),
            LineEdit(
                name="learning_rate",
                label="learning rate",
                value=f"{defaults.learning_rate:g}",
                tooltip="Adam step size, e.g. 0.001 or 3e-4",
            ),
            CheckBox(
                name="augmentation",
                value=True,
                tooltip="Random flips, 90° rotations, elastic deformation, intensity jitter",
            ),
            ComboBox(name="device", choices=DEVICES, value="auto"),
            FloatSpinBox(
                name="preview_every",
                label="preview every (s)",
                value=PREVIEW_INTERVAL,
                min=0.5,
                max=600,
                step=0.5,
                tooltip="Seconds between two live previews while training",
            ),
        ],
    )
    settings = Container(
        name="settings",
        widgets=[
            Container(name="pairs", label="training pairs", labels=False),
            Container(
                name="pair_buttons",
                layout="horizontal",
                labels=False,
                widgets=[
                    PushButton(name="add_pair", text="Add pair"),
                    PushButton(name="remove_pair", text="Remove pair"),
                ],
            ),
            ComboBox(
                name="label_mode",
                label="labels are",
                choices=LABEL_MODE_CHOICES,
                value=defaults.label_mode,
                tooltip=LABEL_MODE_HELP,
            ),
            Label(name="reading", label="reads as", value=""),
            SpinBox(name="iterations", value=defaults.iterations, min=1, max=10_000_000, step=100),
            LineEdit(
                name="model_name",
                label="model name",
                value="",
                tooltip="Name under which Predict offers the model; empty: the first "
                "image layer's name",
            ),
            ComboBox(
                name="start_from",
                label="start from",
                choices=[NEW_NETWORK],
                value=NEW_NETWORK,
                tooltip=START_HELP,
            ),
            FileEdit(
                name="start_file",
                label="model file",
                mode="r",
                filter="*.pt *.zip *.yaml",
                nullable=True,
                visible=False,
                tooltip="A model file saved by napari-tiled-unet (*.pt) or a bioimage.io "
                "package exported by it (*.zip or its rdf.yaml), to fine-tune",
            ),
            Label(name="start_note", label="", value="", visible=False),
            CheckBox(
                name="live_preview",
                text="live preview",
                value=True,
                tooltip="While training, predict the part of the first image the canvas "
                "shows every few seconds into a '<image> preview' layer; painting into the "
                "labels layer meanwhile is picked up by the running training",
            ),
            CheckBox(
                name="show_advanced",
                text="advanced settings",
                value=False,
                tooltip="Axes, channels, 2D/3D, network size, tile, batch, learning "
                "rate, augmentation, device",
            ),
            advanced,
        ],
    )
    return settings, advanced
