"""Saving and exporting the Train widget's model, also while training runs.

While a run steps, the model saved is the best so far: the weights kept at the best validation
(a finished copy, read at once), or before the first validation a copy of the current weights
taken by the training thread between two steps (fetched in a worker, so the GUI never waits
for a step). Training goes on meanwhile; files are written atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from napari.utils.notifications import show_error, show_info

from napari_tiled_unet._napari.bioimageio_export import export_model, sample_of

if TYPE_CHECKING:
    from napari.qt.threading import GeneratorWorker

    from napari_tiled_unet.model.unet import UNet


class SavesTrainedModel:
    """The Train widget's "Save model…" and "Export to bioimage.io…" (a mixin: it uses the
    widget's ``model``, ``trainer``, ``running``, ``status`` and layers)."""

    def _save_clicked(self) -> None:
        self.save_model()  # the button's value must not become the path

    def _export_clicked(self) -> None:
        self.export_model()

    def _with_model(self, then: Callable[[UNet | None], object]) -> object:
        """Call ``then`` with the model to save: the last run's, or while a run steps the best
        so far. Returns what ``then`` returned, or None when the copy comes from a worker."""
        trainer = self.trainer
        if not self.running or trainer is None or trainer.step == 0:
            return then(self.model)
        if trainer.best_step is not None:
            return then(trainer.best_model)  # the kept best: a finished copy
        from napari.qt.threading import create_worker

        worker = create_worker(trainer.best_snapshot, _start_thread=False)
        worker.returned.connect(then)
        self.status.value = "Copying the weights after the current step…"
        worker.start()
        return None

    def export_model(
        self, path: str | Path | None = None, values: dict | None = None
    ) -> GeneratorWorker | None:
        """Export the last trained model (while training runs: the best so far) as a
        bioimage.io package (``.zip``) in a worker, asking for its metadata (unless
        ``values``) and file (unless ``path``); the first training image gives the package's
        test tensors and cover. Returns the worker (None when the weights are still being
        copied: the export starts after the current step)."""
        layer = self._source_layer or self.pairs[0].image_layer.value

        def export(model: UNet | None):
            return export_model(
                self.native,
                model,
                start=self.save_start_path().with_suffix(".zip"),
                sample=None if model is None else sample_of(layer, model),
                path=path,
                values=values,
                done=lambda written: self._tell(f"Exported {written}."),
            )

        return self._with_model(export)

    def save_start_path(self) -> Path:
        """Where "Save model…" starts: ``<model name>.pt`` beside the first training image's
        file when the layer was opened from one, else in the working folder."""
        layer = self._source_layer or self.pairs[0].image_layer.value
        name = self._model_name or self.model_name.value.strip() or getattr(layer, "name", "")
        source = getattr(getattr(layer, "source", None), "path", None)
        file = f"{name or 'model'}.pt"
        return Path(source).parent / file if source else Path(file)

    def save_model(self, path: str | Path | None = None) -> Path | None:
        """Write the last trained model (while training runs: the best so far) to ``path``
        (asked for with a file dialog if None).

        Returns
        -------
        Path or None
            The written file, or None if there was nothing to save, the dialog was cancelled,
            or the weights are still being copied (written after the current step).
        """
        trainer = self.trainer
        if self.model is None and not (self.running and trainer is not None and trainer.step):
            show_error("There is no trained model to save yet; train one first.")
            return None
        if path is None:
            from qtpy.QtWidgets import QFileDialog

            path, _ = QFileDialog.getSaveFileName(
                self.native, "Save model", str(self.save_start_path()), "Model files (*.pt)"
            )
            if not path:
                return None
        path = Path(path)
        if path.suffix != ".pt":
            path = path.with_name(path.name + ".pt")
        return self._with_model(lambda model: self._write(model, path))

    def _write(self, model: UNet | None, path: Path) -> Path | None:
        from napari_tiled_unet.model.modelfile import save_model

        if model is None:
            show_error("There is no trained model to save yet; train one first.")
            return None
        try:
            written = save_model(model, path)
        except OSError as err:
            show_error(f"Could not save the model to {path}: {err}. Choose another folder.")
            return None
        self._tell(f"Saved the model to {written}.")
        return written

    def _tell(self, message: str) -> None:
        """Show ``message`` in the status line; while training runs, whose progress soon
        replaces it there, as a napari notification too."""
        self.status.value = message
        if self.running:
            show_info(message)
