"""The Train widget: train a U-Net on image/labels layer pairs, with a live plot and Stop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import (
    ComboBox,
    Container,
    Label,
    PushButton,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from napari.utils.theme import get_theme
from napari.viewer import Viewer

from napari_tiled_unet._napari._label_reading import (
    BlankLayers,
    LabelReading,
    needs_reading,
    read_label_mode,
)
from napari_tiled_unet._napari._layers import engine_name, layer_data
from napari_tiled_unet._napari._layout import expose, scroll_rows
from napari_tiled_unet._napari._live_session import LiveSession
from napari_tiled_unet._napari._models import trained_models
from napari_tiled_unet._napari._start_from import (
    apply_start_choice,
    start_choices,
    start_label_mode,
    start_model,
)
from napari_tiled_unet._napari._train_saving import SavesTrainedModel
from napari_tiled_unet._napari._worker import start_engine
from napari_tiled_unet._napari.train_settings import settings_form
from napari_tiled_unet._napari.training_plot import TrainingPlot
from napari_tiled_unet.axes import parse_channels
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.events import Progress
from napari_tiled_unet.jobs import (
    LayoutHints,
    TrainImage,
    TrainRequest,
    plan_training,
    read_training_layout,
)
from napari_tiled_unet.jobs.train import TILE_2D, TILE_3D, requested_tile_shape, training_spec

if TYPE_CHECKING:
    from napari.qt.threading import GeneratorWorker

    from napari_tiled_unet.model.unet import UNet
    from napari_tiled_unet.training import Trainer


class TrainWidget(SavesTrainedModel, Container):
    """Train a U-Net on pairs of image and labels layers, in a background thread.

    Each finished (or stopped) training offers its model in the Predict widgets of the same
    viewer at once, as ``"trained: <name>"``; "Continue" trains on from where it stopped
    (same optimizer state), and replaces that model when it ends. "Save model…" and
    "Export…" write the model to a file, also while training runs (the best model so far).
    While training runs, a live preview predicts the part of the first image the canvas
    shows, and labels painted into the training labels layers join the training.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose layers are offered as training pairs.

    Attributes
    ----------
    model : UNet or None
        The last model trained (the best one so far after a Stop).
    last_model : UNet or None
        The last run's final weights, when they are not its best (offered as
        ``"trained: <name> (last)"``).
    trainer : Trainer or None
        The current or last training run.
    plot : TrainingPlot
        The live plot of training loss and validation score.
    """

    def __init__(self, napari_viewer: Viewer):
        from napari_tiled_unet.training import TrainConfig

        defaults = TrainConfig()
        settings, advanced = settings_form(defaults)
        super().__init__(
            labels=False,
            widgets=[
                settings,
                Container(
                    name="actions",
                    layout="horizontal",
                    labels=False,
                    widgets=[
                        PushButton(name="train_button", text="Train"),
                        PushButton(name="stop_button", text="Stop", enabled=False),
                        PushButton(name="continue_button", text="Continue", enabled=False),
                        PushButton(name="save_button", text="Save model…", enabled=False),
                        PushButton(
                            name="export_button", text="Export to bioimage.io…", enabled=False
                        ),
                    ],
                ),
                Label(name="status", value=""),
            ],
        )
        expose(self, settings, advanced, self.actions)
        scroll_rows(self, [settings])
        self.show_advanced.changed.connect(self._show_advanced)
        self._viewer = napari_viewer
        self._trained = trained_models(napari_viewer)
        self._worker: GeneratorWorker | None = None
        self.trainer: Trainer | None = None
        self.model: UNet | None = None
        self.last_model: UNet | None = None
        self._model_name = ""
        self._source_layer: Image | None = None
        self._kept = False
        self._engine = None
        self._closed = False
        self._new_rate = defaults.learning_rate
        self.live = LiveSession(napari_viewer, self.shutdown)
        self._blank = BlankLayers(napari_viewer)
        self.start_from.choices = lambda _w: start_choices(self._trained)
        self._trained.changed.connect(self.start_from.reset_choices)
        self.start_from.changed.connect(self._start_changed)
        self.pair_buttons.label = ""  # (an empty label given to __init__ means "use the name")
        advanced.label = ""
        self.status.native.setWordWrap(True)
        self.reading.native.setWordWrap(True)
        theme = get_theme(napari_viewer.theme)
        self.plot = TrainingPlot(theme.background.as_hex(), theme.text.as_hex())
        self.native.layout().addWidget(self.plot.canvas)

        self.add_pair()
        self.pair_buttons.add_pair.changed.connect(self.add_pair)
        self.pair_buttons.remove_pair.changed.connect(self.remove_pair)
        self.dimensions.changed.connect(self._dimensions_changed)
        for widget in (self.axes, self.channels, self.dimensions, self.label_mode):
            widget.changed.connect(self.show_layout)
        self.train_button.changed.connect(self.train)
        self.stop_button.changed.connect(self.stop)
        self.continue_button.changed.connect(self.continue_training)
        self.save_button.changed.connect(self._save_clicked)
        self.export_button.changed.connect(self._export_clicked)
        for event in ("inserted", "removed", "moved", "reordered"):
            getattr(napari_viewer.layers.events, event).connect(self.reset_choices)

    def _show_advanced(self, show: bool) -> None:
        self.advanced.visible = show

    def _start_changed(self, choice: str) -> None:
        apply_start_choice(self, choice, self._new_rate)
        self.show_layout()

    # -- pairs -------------------------------------------------------------------------------

    def _layers(self, kind: type) -> list:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, kind)]

    def add_pair(self) -> None:
        """Add a row choosing one more (image layer, labels layer) pair."""
        index = len(self.pairs)
        row = Container(
            layout="horizontal",
            widgets=[
                ComboBox(name="image_layer", label="image"),
                ComboBox(name="labels_layer", label="labels"),
            ],
        )
        row.image_layer.choices = lambda _w: self._layers(Image)
        row.labels_layer.choices = lambda _w: self._layers(Labels)
        # Offer the next unused layers, so that n pairs of layers take n clicks.
        for combo in (row.image_layer, row.labels_layer):
            if index < len(combo.choices):
                combo.value = combo.choices[index]
            combo.changed.connect(self.show_layout)
        self.pairs.append(row)
        self.show_layout()

    def remove_pair(self) -> None:
        """Remove the last pair row (one always stays)."""
        if len(self.pairs) > 1:
            self.pairs.pop()
            self.show_layout()

    def show_layout(self, _value=None) -> None:
        """Show how the model to train reads each pair's image (:meth:`layouts`), or why not."""
        try:
            pairs = self.training_images()
        except ValueError:
            self.reading.value = ""  # a row without layers: train() says what to do
            return
        try:
            labels = self.label_reading()
            request = self.request(labels)
            layouts = [
                read_training_layout(pair, training_spec(request), request) for pair in pairs
            ]
        except ValueError as err:
            self.reading.value = str(err)
            return
        described = "; ".join(
            f"{pair.image_name!r}: {layout.describe()}"
            for pair, layout in zip(pairs, layouts, strict=True)
        )
        self.reading.value = f"{labels.text} {described}".strip()

    def label_reading(self) -> LabelReading:
        """The label mode to train with: the choice, or for "auto" the labels' reading.

        Raises
        ------
        ValueError
            If a row lacks a layer, or "auto" cannot decide (the message says what to choose).
        """
        chosen = self.label_mode.value
        if not needs_reading(chosen):
            return LabelReading(chosen, "")
        try:
            pairs = self.layer_pairs()
        except ValueError:
            if chosen == "auto":
                raise
            return LabelReading(chosen, "")  # nothing to warn about yet
        labels = [(layer.name, layer_data(layer)) for _image, layer in pairs]
        blank = all(self._blank.started_blank(layer) for _image, layer in pairs)
        base = start_label_mode(self.start_from.value, self._trained)
        return read_label_mode(chosen, labels, painted=blank, base_mode=base)

    def layer_pairs(self) -> list[tuple[Image, Labels]]:
        """The chosen (image layer, labels layer) pairs.

        Raises
        ------
        ValueError
            If a row lacks a layer.
        """
        pairs = []
        for i, row in enumerate(self.pairs, start=1):
            image, labels = row.image_layer.value, row.labels_layer.value
            if image is None or labels is None:
                raise UserInputError(
                    f"Training pair {i} needs an image layer and a labels layer. Open an image, "
                    "add a Labels layer and paint some objects (or open File ▸ Open Sample ▸ "
                    "Tiled U-Net ▸ Synthetic nuclei), then choose them here."
                )
            pairs.append((image, labels))
        return pairs

    def training_images(self) -> list[TrainImage]:
        """The chosen pairs as the training job takes them (data, names, the layer's axis hints).

        Raises
        ------
        ValueError
            If a row lacks a layer.
        """
        return [
            TrainImage(
                layer_data(image),
                layer_data(labels),
                (image.name, labels.name),
                LayoutHints(
                    rgb=bool(getattr(image, "rgb", False)),
                    axis_labels=getattr(image, "axis_labels", None),
                ),
                described=(f"image {engine_name(image)}", f"labels layer {labels.name!r}"),
            )
            for image, labels in self.layer_pairs()
        ]

    # -- configuration -----------------------------------------------------------------------

    @property
    def ndim(self) -> int:
        """Spatial axes of the model to train: 2 or 3 (the ``dimensions`` choice)."""
        return 3 if self.dimensions.value == "3D" else 2

    def _dimensions_changed(self, value: str) -> None:
        three = value == "3D"
        self.anisotropic_levels.enabled = three
        if three and self.tile_size.value > 2 * TILE_3D:
            self.tile_size.value = TILE_3D
        elif not three and self.tile_size.value == TILE_3D:
            self.tile_size.value = TILE_2D

    def request(self, labels: LabelReading | None = None) -> TrainRequest:
        """The :class:`~napari_tiled_unet.jobs.TrainRequest` the controls describe.

        ``labels`` is the :meth:`label_reading` (read here if not given).

        Raises
        ------
        ValueError
            For a learning rate or channels that are not numbers, or values TrainConfig rejects.
        """
        from napari_tiled_unet.training import AugmentSpec, NetworkSpec, TrainConfig

        try:
            learning_rate = float(self.learning_rate.value)
        except ValueError:
            raise UserInputError(
                f"The learning rate {self.learning_rate.value!r} is not a number; "
                "enter e.g. 0.001 or 3e-4."
            ) from None
        iterations = self.iterations.value
        augment = self.augmentation.value
        config = TrainConfig(
            label_mode=(labels or self.label_reading()).mode,
            iterations=iterations,
            tile_shape=requested_tile_shape(self.ndim, self.tile_size.value),
            batch_size=self.batch_size.value,
            learning_rate=learning_rate,
            fine_tune_learning_rate=learning_rate,  # the field's value, also when fine-tuning
            network=NetworkSpec(
                base_channels=self.base_channels.value,
                depth=self.depth.value,
                anisotropic_levels=self.anisotropic_levels.value if self.ndim == 3 else 0,
            ),
            augment=AugmentSpec(
                flips=augment, rotations=augment, elastic=augment, intensity=augment
            ),
            device=self.device.value,
            # About ten validations per run (at most every 50 steps) make a readable plot.
            validation_every=min(50, max(1, iterations // 10)),
        )
        return TrainRequest(
            config,
            ndim=self.ndim,
            tile=self.tile_size.value,
            model=start_model(self.start_from.value, self.start_file.value, self._trained),
            axes=self.axes.value.strip() or None,
            channels=parse_channels(self.channels.value),
        )

    # -- running -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a training run is in progress."""
        return self._worker is not None

    def train(self) -> GeneratorWorker | None:
        """Start training on the chosen pairs; return the worker, or None if inputs are unusable.

        Problems visible before training (missing layers, shapes, tile size, settings) and
        errors during training are shown as napari error notifications.
        """

        if self.running:
            return None
        try:
            pairs = self.training_images()
            plan = plan_training(self.request(), pairs)
            trainer = plan.trainer()
        except ValueError as err:
            show_error(str(err))
            self.status.value = str(err)
            return None

        self.trainer = trainer
        self._kept = False
        self._kept_name = None
        self._model_name = self.model_name.value.strip() or pairs[0].image_name
        self._layout = plan.layouts[0]
        self._pair_layers = self.layer_pairs()  # a Continue follows the same layers
        self._source_layer = self._pair_layers[0][0]
        self.plot.clear(plan.config.best_metric)
        self.status.value = "Reading the training data…"
        return self._run(trainer.iter_run())

    def continue_training(self) -> GeneratorWorker | None:
        """Train ``iterations`` more steps of the last run, with its optimizer state (after a
        Stop or the end); the model offered in Predict is updated when it ends."""
        trainer = self.trainer
        if self.running or trainer is None or trainer.status not in ("stopped", "finished"):
            return None
        self._kept = False
        self.status.value = f"Continuing from step {trainer.step}…"
        return self._run(trainer.iter_continue(self.iterations.value))

    def _run(self, engine) -> GeneratorWorker:
        self._engine = engine
        self._set_running(True)
        self._worker = start_engine(
            lambda: engine,
            description=f"Training {self._model_name}",
            on_result=self._keep,
            on_progress=self._show_progress,
            on_error=self._show_failure,
            on_finished=self._finished,
        )
        self.live.watch_close(self.native)
        self.live.start(
            self.trainer,
            self._source_layer,
            [labels for _image, labels in self._pair_layers],
            self._layout,
            self.live_preview.value,
            self.preview_every.value,
        )
        return self._worker

    def shutdown(self) -> None:
        """Stop training and the preview and wait for their threads (the viewer closes); the
        widget shows nothing more (its Qt widgets are going away)."""
        if self._closed:
            return
        self._closed = True
        self._trained.changed.disconnect(self.start_from.reset_choices)
        self._blank.disconnect()
        self.live.shutdown(lambda: self._worker is not None and self._worker.quit())
        if self._engine is not None:
            try:
                self._engine.close()  # its prefetch thread stops with it
            except ValueError:  # still running in a worker that did not stop in time
                pass

    def stop(self) -> None:
        """Stop training after the current step; the best model so far is kept."""
        if self._worker is not None:
            self._worker.quit()
            self.status.value = "Stopping after this step…"

    def _set_running(self, running: bool) -> None:
        self.train_button.enabled = not running
        self.stop_button.enabled = running
        trainer = self.trainer
        self.continue_button.enabled = (
            not running and trainer is not None and trainer.status in ("stopped", "finished")
        )
        self.save_button.enabled = self.model is not None or (running and trainer.step > 0)
        self.export_button.enabled = self.save_button.enabled

    def _show_progress(self, event: Progress) -> None:
        if self._closed:
            return
        self.plot.add(event)
        if event.done > 0 and not self.save_button.enabled:
            self.save_button.enabled = self.export_button.enabled = True
        if self._worker is not None and not self._worker.abort_requested:
            self.status.value = event.message

    def _show_failure(self, error: Exception) -> None:
        if self._closed:
            return
        self.status.value = f"Failed: {error}"

    def _keep(self, model: UNet) -> None:
        if self._closed:
            return
        self._kept = True
        self.model = model
        if self._kept_name is None:  # a Continue replaces the model its run offered
            self._kept_name = self._trained.add(self._model_name, model)
        else:
            self._trained.put(self._kept_name, model)
        name = self._kept_name
        trainer = self.trainer
        best = ""
        if trainer.best_step is not None:
            metric = trainer.config.best_metric
            best = f" (best {metric} {trainer.best_scores[metric]:.3f} at step {trainer.best_step})"
        if trainer.best_step not in (None, trainer.step):  # Stop keeps the last weights too
            self.last_model = trainer.model_of()
            self._trained.put(f"{name} (last)", self.last_model)
            best += f"; its last weights (step {trainer.step}) as 'trained: {name} (last)'"
        if trainer.status == "stopped":
            done = f"Stopped at step {trainer.step}"
        else:
            done = f"Trained {trainer.step} steps"
        self.status.value = (
            f"{done}: model 'trained: {name}'{best} is offered in Predict; "
            "save it with 'Save model…'."
        )

    def _finished(self) -> None:
        self._worker = None
        self.live.end()
        if self._closed:
            return
        trainer = self.trainer
        # A Stop never delivers a result: keep the best model so far. (So does a Stop that
        # came just after the last step.) A Stop before the first step leaves an untrained
        # network, which must not be offered as trained.
        if trainer is not None and not self._kept:
            if trainer.status in ("stopped", "finished") and trainer.step > 0:
                model = trainer.best_model
                if model is not None:
                    self._keep(model)
            elif trainer.status in ("stopped", "ready"):
                self.status.value = "Stopped before the first training step; no model."
        self._set_running(False)
