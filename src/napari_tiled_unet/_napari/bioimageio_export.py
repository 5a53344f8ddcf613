"""*Export to bioimage.io…* in the widgets: ask for the package's metadata and file name, then
write the package in a worker thread (tracing the network and cutting the test tensors take
seconds)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error, show_info

from napari_tiled_unet.errors import UserInputError

if TYPE_CHECKING:
    from napari.layers import Image

    from napari_tiled_unet.model.unet import UNet

CITE_HELP = (
    "A further citation as TEXT|DOI_OR_URL (empty: none); the U-Net paper and napari-tiled-unet "
    "are always cited."
)


def metadata_fields(model: UNet) -> dict[str, dict[str, Any]]:
    """The dialog's fields, filled with :func:`default_export_metadata`'s values."""
    from napari_tiled_unet.bioimageio.metadata import default_export_metadata

    meta = default_export_metadata(model)
    return {
        "name": {"value": meta["name"], "annotation": str},
        "description": {"value": meta["description"], "annotation": str},
        "authors": {
            "value": ", ".join(a["name"] for a in meta["authors"]),
            "annotation": str,
            "options": {"tooltip": "Author names, separated by commas."},
        },
        "license": {
            "value": meta["license"],
            "annotation": str,
            "options": {"tooltip": "An SPDX licence id, e.g. CC-BY-4.0, MIT, BSD-3-Clause."},
        },
        "citation": {"value": "", "annotation": str, "options": {"tooltip": CITE_HELP}},
    }


def export_arguments(values: dict[str, Any], model: UNet) -> dict[str, Any]:
    """:func:`export_bioimageio` keywords from the dialog's ``values``.

    Raises
    ------
    UserInputError
        If a field is empty or the citation is not ``TEXT|DOI_OR_URL``.
    """
    from napari_tiled_unet.bioimageio.metadata import default_export_metadata

    for field in ("name", "description", "authors", "license"):
        if not str(values.get(field, "")).strip():
            raise UserInputError(f"Export to bioimage.io: '{field}' is empty; fill it in.")
    cite = default_export_metadata(model)["cite"]
    extra = str(values.get("citation", "")).strip()
    if extra:
        text, sep, ref = extra.rpartition("|")
        if not sep or not text.strip() or not ref.strip():
            raise UserInputError(
                f"Export to bioimage.io: the citation must be TEXT|DOI_OR_URL, got {extra!r}."
            )
        key = "url" if ref.strip().startswith(("http://", "https://")) else "doi"
        cite.append({"text": text.strip(), key: ref.strip()})
    return {
        "name": str(values["name"]).strip(),
        "description": str(values["description"]).strip(),
        "authors": [a.strip() for a in str(values["authors"]).split(",") if a.strip()],
        "license": str(values["license"]).strip(),
        "cite": cite,
    }


def sample_of(layer: Image | None, model: UNet) -> np.ndarray | None:
    """The layer's pixels to cut the package's test tensors from, where they are in memory and
    shaped as the network reads them (``(*spatial)`` or ``(C, *spatial)``); else None (the
    export then uses a synthetic sample)."""
    data = None if layer is None else getattr(layer, "data", None)
    if not isinstance(data, np.ndarray) or getattr(layer, "rgb", False):
        return None
    ndim, channels = model.config.ndim, model.config.in_channels
    if channels == 1 and data.ndim == ndim:
        return data
    if data.ndim == ndim + 1 and data.shape[0] == channels:
        return data
    return None


def export_model(
    parent: Any,
    model: UNet | None,
    *,
    start: Path,
    sample: np.ndarray | None = None,
    path: str | os.PathLike | None = None,
    values: dict[str, Any] | None = None,
    done: Callable[[Path], None] | None = None,
    inputs: Sequence[tuple[str, str | os.PathLike]] = (),
) -> Any:
    """Ask for metadata (unless ``values``) and a file (unless ``path``), then export in a
    worker; return the worker, or None if nothing was started.

    Parameters
    ----------
    parent : QWidget
        The widget the dialogs belong to.
    model : UNet or None
        The network to export; None shows an error.
    start : Path
        Where the file dialog starts.
    sample : numpy.ndarray, optional
        Pixels for the test tensors and cover (see :func:`sample_of`).
    done : callable, optional
        Called on the GUI thread with the written package.
    inputs : sequence of (str, path-like)
        The user's files the package must not replace (e.g. the model file it is made from),
        named as messages name them.
    """
    from napari.qt.threading import create_worker

    from napari_tiled_unet.bioimageio.export import export_bioimageio, require_bioimageio
    from napari_tiled_unet.jobs.paths import check_job_paths

    if model is None:
        show_error("There is no model to export yet; train or choose one first.")
        return None
    try:
        require_bioimageio()
        if values is None:
            from magicgui.widgets import request_values

            values = request_values(metadata_fields(model), title="Export to bioimage.io")
            if values is None:
                return None
        arguments = export_arguments(values, model)
    except UserInputError as err:
        show_error(str(err))
        return None
    if path is None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(
            parent, "Export to bioimage.io", str(start), "bioimage.io packages (*.zip)"
        )
        if not path:
            return None
    path = Path(path)
    if path.suffix.lower() != ".zip":
        path = path.with_name(path.name + ".zip")
    try:
        check_job_paths(inputs, [("bioimage.io package", path)])
    except UserInputError as err:
        show_error(str(err))
        return None

    def finished(written: Path) -> None:
        show_info(f"Exported {written}; check it with: bioimageio test {written}")
        if done is not None:
            done(written)

    def failed(error: Exception) -> None:
        show_error(f"Could not export to {path}: {error}")

    worker = create_worker(export_bioimageio, model, path, sample_image=sample, **arguments)
    worker.returned.connect(finished)
    worker.errored.connect(failed)
    worker.start()
    return worker
