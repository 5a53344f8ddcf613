"""The Predict widget: segment an image layer with a U-Net model, tile by tile."""

from __future__ import annotations

import os
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from napari.layers import Image
from napari.utils.notifications import show_error
from napari.viewer import Viewer

from napari_tiled_unet._napari._layers import (
    engine_name,
    layer_data,
    result_layer_kwargs,
)
from napari_tiled_unet._napari._layout import expose, scroll_rows
from napari_tiled_unet._napari._models import trained_models
from napari_tiled_unet._napari._results import MULTISCALE_PLANE_PIXELS, iter_for_viewer
from napari_tiled_unet._napari._worker import Throttle, start_engine
from napari_tiled_unet._napari.bioimageio_export import export_model, sample_of
from napari_tiled_unet.axes import ModelSpec, parse_channels
from napari_tiled_unet.device import DEVICES
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.events import Progress
from napari_tiled_unet.jobs import (
    OUTPUT_KINDS,
    LayoutHints,
    PredictRequest,
    PredictResult,
    iter_predict_job,
    read_layout,
    read_spec,
)
from napari_tiled_unet.rescale import DIAMETER_HELP

if TYPE_CHECKING:
    from napari.qt.threading import GeneratorWorker

    from napari_tiled_unet.model.unet import UNet

DEFAULT_MODEL = "default model"
MODEL_FILE = "model file"
TRAINED = "trained: "
LAZY_RESULT_PIXELS = 8192 * 8192
"""Images with at least this many pixels get a result backed by a zarr store on disk."""


def read_model_spec(model: os.PathLike | None, trust_package_code: bool = False) -> ModelSpec | str:
    """What a model file takes (:func:`napari_tiled_unet.jobs.read_spec`), or why it cannot be read.

    Loads the file, so the widget calls it in a worker thread; the text of a failure is shown
    in 'reads as' (Run reports it as an error).
    """
    try:
        return read_spec(model, trust_package_code=trust_package_code)
    except (OSError, ValueError) as err:
        return f"Cannot read the model: {err}"


class PredictWidget(Container):
    """Segment an image layer with a U-Net, tile by tile, in a background thread.

    The result becomes a new layer on top of the image (same ``scale``, ``translate``, axis
    labels and units): a Labels layer ``"<image> labels"`` (class per pixel) or
    ``"<image> instances"`` (object ids), or an Image layer ``"<image> probabilities"``
    with a leading class axis.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose image layers are offered and to which results are added.

    Attributes
    ----------
    lazy_result_pixels : int
        Results for images with at least this many pixels are streamed into a zarr store in a
        temporary folder owned by the widget (removed when the widget is deleted or napari
        exits) and come back as lazy layers; smaller ones as numpy arrays.
    multiscale_result_pixels : int
        In-memory results whose Y x X plane has at least this many pixels come back as a
        pyramid built in the worker thread (adding one big plane stalls the viewer); label
        results come in the smallest unsigned dtype that holds their ids.
    """

    def __init__(self, napari_viewer: Viewer):
        fields = [  # they scroll; the buttons and the status line below them stay visible
            ComboBox(name="image", tooltip="Image layer to segment"),
            LineEdit(
                name="axes",
                value="",
                tooltip="The layer's axes, e.g. YX, ZYX, CYX, TZCYX, YXC (RGB); empty: from "
                "the layer and the model. Extra axes (T, or Z for a 2D model) are predicted "
                "frame by frame.",
            ),
            LineEdit(
                name="channels",
                value="",
                tooltip="Channels to feed the model, e.g. 0 or 2,0,1; empty: all, or the "
                "model's stored selection for a layer with as many channels as it was "
                "trained on",
            ),
            Label(name="reading", label="reads as", value=""),
            ComboBox(
                name="model",
                tooltip="The bundled default model, a model file, or a model trained in this session",
            ),
            FileEdit(
                name="model_file",
                label="model file",
                mode="r",
                filter="*.pt *.zip *.yaml",
                nullable=True,
                tooltip="A model file saved by napari-tiled-unet (*.pt), or a bioimage.io "
                "package (*.zip or its rdf.yaml): exported by this plugin, or any package with "
                "torchscript weights",
            ),
            CheckBox(
                name="trust_package_code",
                value=False,
                label="trust package code",
                tooltip="Allow a bioimage.io package whose network is Python source shipped "
                "inside it: loading it runs that code. Leave off unless you trust its author.",
            ),
            SpinBox(
                name="tile_size",
                label="tile size",
                value=0,
                min=0,
                max=8192,
                step=16,
                tooltip=(
                    "Tile edge in pixels, context included; 0 = automatic (the largest "
                    "up to 1280 px whose forward pass is estimated at 768 MiB or less)"
                ),
            ),
            SpinBox(
                name="halo",
                label="halo",
                value=0,
                min=0,
                max=512,
                tooltip=(
                    "Context in pixels each tile reads, for 'same' networks; 0 = exact (the "
                    "whole receptive field on the pooling grid: no seams, 112 px at depth 4). Smaller is faster "
                    "and needs less memory, but differs slightly near tile borders"
                ),
            ),
            SpinBox(
                name="batch_size",
                label="batch size",
                value=1,
                min=1,
                max=512,
                tooltip="Tiles per forward pass; on a GPU with memory to spare, more can be faster",
            ),
            ComboBox(name="device", choices=DEVICES, value="auto"),
            LineEdit(
                name="diameter",
                value="",
                tooltip=DIAMETER_HELP[0].upper() + DIAMETER_HELP[1:],
            ),
            ComboBox(
                name="output",
                choices=OUTPUT_KINDS,
                value="auto",
                tooltip="auto: object ids for models trained on instance labels, else classes",
            ),
        ]
        super().__init__(
            widgets=[
                *fields,
                Container(
                    name="actions",
                    layout="horizontal",
                    labels=False,
                    widgets=[
                        PushButton(name="run_button", text="Run"),
                        PushButton(name="cancel_button", text="Cancel", enabled=False),
                        PushButton(
                            name="export_button",
                            text="Export model…",
                            tooltip="Write the chosen model as a bioimage.io package (.zip) "
                            "for other tools (ilastik, deepImageJ, QuPath, ...).",
                        ),
                    ],
                ),
                Label(name="status", value=""),
            ],
        )
        self.actions.label = ""
        expose(self, self.actions)
        scroll_rows(self, fields)
        self._viewer = napari_viewer
        self._trained = trained_models(napari_viewer)
        self._worker: GeneratorWorker | None = None
        self._cancelled = False
        self._throttle = Throttle()
        self.lazy_result_pixels = LAZY_RESULT_PIXELS
        self.multiscale_result_pixels = MULTISCALE_PLANE_PIXELS
        self._store_dir: tempfile.TemporaryDirectory | None = None
        self._stores = 0
        self._specs: dict[str, ModelSpec | str] = {}
        self._reading: set[str] = set()
        self.status.native.setWordWrap(True)
        self.reading.native.setWordWrap(True)
        self.image.choices = self._image_layers
        self.model.choices = self._model_names
        for widget in (
            self.image,
            self.axes,
            self.channels,
            self.model,
            self.model_file,
            self.trust_package_code,
        ):
            widget.changed.connect(self.show_layout)

        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.export_button.changed.connect(self._export_clicked)
        self.model_file.changed.connect(self._on_model_file)
        self._trained.changed.connect(self.model.reset_choices)
        for event in ("inserted", "removed", "moved", "reordered"):
            getattr(napari_viewer.layers.events, event).connect(self.reset_choices)
        self.show_layout()  # opened on an existing layer: say at once how it will be read

    # -- choices -----------------------------------------------------------------------------

    def _image_layers(self, _widget=None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _model_names(self, _widget=None) -> list[str]:
        return [DEFAULT_MODEL, MODEL_FILE, *(TRAINED + name for name in self._trained.names())]

    def _on_model_file(self, value) -> None:
        if value is not None and str(value) not in ("", "."):
            self.model.value = MODEL_FILE

    # -- the layout the model will read --------------------------------------------------------

    def show_layout(self, _value=None) -> None:
        """Show how the chosen model reads the chosen layer (``axes``/``channels`` or detected).

        An impossible or ambiguous layout shows the engine's error, which lists the readings
        it considered. A model trained on a channel selection reads a layer with as many
        channels as its training images through that selection unless ``channels`` is
        filled in, shown as e.g. "channels [2, 0] (from the model)". A model file is read
        once, in a worker thread; until then the text says so.
        """
        layer = self.image.value
        spec = None if layer is None else self._chosen_spec()
        if spec is None:
            self.reading.value = ""
            return
        if isinstance(spec, str):
            self.reading.value = spec
            return
        try:
            layout = read_layout(layer_data(layer).shape, spec, self.request(layer, None))
        except ValueError as err:
            self.reading.value = str(err)
        else:
            self.reading.value = layout.describe()

    @property
    def reading_model(self) -> bool:
        """Whether a model file is being read (in a worker) to show its layout."""
        return bool(self._reading)

    def _chosen_spec(self) -> ModelSpec | str | None:
        """The chosen model's spec; a message while it is read or if it cannot be; None."""
        from napari.qt.threading import create_worker

        try:
            model = self._chosen_model()
        except ValueError:
            return None  # no model file chosen yet: run() says so
        if model is not None and not isinstance(model, str | os.PathLike):
            return ModelSpec.of(model)
        key = "" if model is None else f"{model}|{self.trust_package_code.value}"
        if model is not None and os.path.isfile(model):  # a file saved again is read again
            key += f"@{os.stat(model).st_mtime_ns}"
        found = self._specs.get(key)
        if found is not None:
            return found
        if not self._reading:  # one at a time; the next is started when it returns
            self._reading.add(key)
            worker = create_worker(read_model_spec, model, self.trust_package_code.value)
            worker.returned.connect(partial(self._spec_read, key))
            worker.start()
        return "Reading the model…"

    def _spec_read(self, key: str, spec: ModelSpec | str) -> None:
        self._reading.discard(key)
        self._specs[key] = spec
        try:
            self.show_layout()
        except RuntimeError:  # the widget was closed while the model was read
            pass

    # -- running -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a prediction is in progress."""
        return self._worker is not None

    def _chosen_model(self) -> UNet | os.PathLike | None:
        choice = self.model.value
        if choice == DEFAULT_MODEL:
            return None
        if choice == MODEL_FILE:
            path = self.model_file.value
            if path is None or str(path) in ("", "."):
                raise UserInputError(
                    f"No model file chosen. Pick a *.pt file in '{MODEL_FILE}', or choose "
                    f"'{DEFAULT_MODEL}' in 'model'."
                )
            return path
        return self._trained.get(choice.removeprefix(TRAINED))

    def _export_clicked(self) -> None:
        self.export_model()

    def export_model(self, path: str | os.PathLike | None = None, values: dict | None = None):
        """Export the chosen model (the bundled one, a trained one or a model file) as a
        bioimage.io package in a worker, asking for its metadata and file unless given; the
        chosen image layer gives the package's test tensors. Returns the worker or None."""
        from napari_tiled_unet.jobs import load_job_model

        try:
            chosen = self._chosen_model()
            model = load_job_model(chosen)
        except (UserInputError, OSError) as err:
            return self._refuse(str(err))
        files = [("model file", chosen)] if isinstance(chosen, str | os.PathLike) else []
        layer = self.image.value
        source = getattr(getattr(layer, "source", None), "path", None)
        start = Path(source).parent if source else Path()
        name = getattr(layer, "name", "") or "model"
        return export_model(
            self.native,
            model,
            start=start / f"{name} model.zip",
            sample=sample_of(layer, model),
            path=path,
            values=values,
            inputs=files,
        )

    def run(self) -> GeneratorWorker | None:
        """Start predicting the chosen layer; return the worker, or None if inputs are unusable.

        Problems found before starting (no layer, an RGB layer, no model file chosen) and errors
        from the engine are shown as napari error notifications; nothing is added then.
        """
        if self.running:
            return None
        layer = self.image.value
        if layer is None:
            return self._refuse(
                "There is no image layer to segment. Open one (e.g. File ▸ Open Sample ▸ "
                "Tiled U-Net ▸ Synthetic nuclei) and choose it in 'image'."
            )
        try:
            request = self.request(layer, self._chosen_model())
        except ValueError as err:
            return self._refuse(str(err))

        self._cancelled = False
        self._throttle = Throttle()
        self._set_running(True)
        self.status.value = f"Predicting {layer.name!r}…"
        # A rescaled prediction is computed in memory (napari_tiled_unet.rescale).
        store = self._result_store(layer) if request.diameter is None else None
        job = iter_predict_job(
            layer_data(layer), request, output_path=store, pyramid=store is not None
        )
        self._worker = start_engine(
            iter_for_viewer,  # labels in their smallest dtype, big planes as a pyramid
            job,
            self.multiscale_result_pixels,
            description=f"Predicting {layer.name}",
            on_result=partial(self._add_result, layer),
            on_progress=self._show_progress,
            on_error=self._show_failure,
            on_finished=self._finished,
        )
        return self._worker

    def request(self, layer: Image, model: UNet | os.PathLike | None) -> PredictRequest:
        """The :class:`~napari_tiled_unet.jobs.PredictRequest` the controls describe for ``layer``.

        Raises
        ------
        ValueError
            For channels that are not numbers.
        """
        return PredictRequest(
            model=model,
            output=self.output.value,
            tile=self.tile_size.value or None,
            halo=self.halo.value or None,  # the spin box's 0 means exact
            batch_size=self.batch_size.value,
            device=self.device.value,
            axes=self.axes.value.strip() or None,
            channels=parse_channels(self.channels.value),
            hints=LayoutHints(
                rgb=bool(getattr(layer, "rgb", False)),
                axis_labels=getattr(layer, "axis_labels", None),
            ),
            name=engine_name(layer),
            trust_package_code=self.trust_package_code.value,
            diameter=self.diameter.value.strip() or None,
        )

    def _result_store(self, layer: Image) -> Path | None:
        """A fresh ``.zarr`` path for a large layer's result, or None to keep it in memory."""
        shape = layer_data(layer).shape
        pixels = 1
        for n in shape:
            pixels *= int(n)
        if pixels < self.lazy_result_pixels:
            return None
        if self._store_dir is None:
            self._store_dir = tempfile.TemporaryDirectory(prefix="napari-tiled-unet-")
        self._stores += 1
        return Path(self._store_dir.name) / f"result-{self._stores}.zarr"

    def cancel(self) -> None:
        """Stop the running prediction at its next batch; nothing is added."""
        if self._worker is not None:
            self._cancelled = True
            self._worker.quit()
            self.status.value = "Cancelling at the next batch…"

    def _refuse(self, message: str) -> None:
        show_error(message)
        self.status.value = message
        return None

    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.cancel_button.enabled = running

    def _show_progress(self, event: Progress) -> None:
        if not self._cancelled and self._throttle.ready(event):
            self.status.value = event.message

    def _show_failure(self, error: Exception) -> None:
        self.status.value = f"Failed: {error}"

    def _finished(self) -> None:
        self._worker = None
        self._set_running(False)
        if self._cancelled:
            self.status.value = "Cancelled; nothing was added."

    def _add_result(self, source: Image, job: PredictResult) -> None:
        output, result, layout = job.output, job.data, job.layout
        multiscale = isinstance(result, list)
        shape = tuple((result[0] if multiscale else result).shape)
        # The result has the layer's axes less its channel axis (an RGB layer's is no dim).
        dims = [d for d in range(source.ndim) if source.rgb or d != layout.channel_axis]
        if output == "probabilities":
            kwargs = result_layer_kwargs(source, shape, leading="class", dims=dims)
            layer = self._viewer.add_image(
                result,
                name=f"{source.name} probabilities",
                contrast_limits=(0.0, 1.0),
                multiscale=multiscale,
                **kwargs,
            )
        else:
            kwargs = result_layer_kwargs(source, shape, dims=dims)
            layer = self._viewer.add_labels(
                result, name=f"{source.name} {output}", multiscale=multiscale, **kwargs
            )
        where = ", on disk" if job.path is not None else ""
        note = f" (multiscale{where}; napari cannot paint multiscale labels)" if multiscale else ""
        self.status.value = f"Added layer {layer.name!r}{note}; read as {layout.describe()}."
