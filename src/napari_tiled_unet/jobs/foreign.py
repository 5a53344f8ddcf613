"""Prediction jobs with foreign bioimage.io packages (torchscript weights, other architectures).

:func:`~napari_tiled_unet.jobs.predict.iter_predict_job` hands a request whose model is such a
package to :func:`iter_foreign_job`: the image's layout is read as for this plugin's models
(the package's channels and two or three space axes; T, and Z for a 2D package, are predicted
frame by frame), each frame runs through
:func:`~napari_tiled_unet.bioimageio.foreign.iter_predict_foreign` (the same exact overlap-tile
engine), and the outputs are written under the same rules: checked before any work, published
only when complete, all together or none. The package's output of the whole image is held in
memory.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.events import Progress

if TYPE_CHECKING:
    from napari_tiled_unet.bioimageio.foreign import ForeignPackage
    from napari_tiled_unet.jobs.predict import PredictRequest, PredictResult
    from napari_tiled_unet.model.unet import UNet


def foreign_package(source: Any, *, trust_package_code: bool = False) -> ForeignPackage | None:
    """The foreign package a request's model names, opened; None for this plugin's models.

    Parameters
    ----------
    source : UNet, ForeignPackage, path-like or None
        A request's ``model``.
    trust_package_code : bool
        See :func:`~napari_tiled_unet.bioimageio.foreign.open_foreign`.

    Raises
    ------
    PackageError
        For a package that cannot be read or run (see ``open_foreign``).
    """
    from napari_tiled_unet.bioimageio.foreign import ForeignPackage, open_foreign

    if isinstance(source, ForeignPackage):
        return source
    if not isinstance(source, str | os.PathLike):
        return None
    from napari_tiled_unet.bioimageio.package import is_own_package, is_package

    if not is_package(source) or is_own_package(source):
        return None
    return open_foreign(source, trust_package_code=trust_package_code)


def load_predict_model(source: Any, *, trust_package_code: bool = False) -> UNet | ForeignPackage:
    """A request's model loaded once (e.g. for every input of a batch run): a foreign package
    opened, else :func:`~napari_tiled_unet.jobs.predict.load_job_model`'s network."""
    from napari_tiled_unet.jobs.predict import load_job_model

    package = foreign_package(source, trust_package_code=trust_package_code)
    return package if package is not None else load_job_model(source)


def model_file(source: Any) -> Any:
    """The file a request's model was read from (a foreign package's path), else ``source``."""
    from napari_tiled_unet.bioimageio.foreign import ForeignPackage

    return source.path if isinstance(source, ForeignPackage) else source


def _check_request(package: ForeignPackage, request: PredictRequest, pyramid, client) -> str:
    """The output kind, or a clear refusal of what foreign packages do not support."""
    kind = "labels" if request.output == "auto" else request.output
    what = f"the bioimage.io package {package.path} (not a napari-tiled-unet model)"
    refusals = [
        (kind == "instances", "output 'instances': choose labels or probabilities"),
        (request.halo is not None, "--halo/halo: its context is the halo the package declares"),
        (request.precision != "float32", f"precision {request.precision}: only float32"),
        (request.device not in ("auto", "cpu"), f"device {request.device}: it runs on the CPU"),
        (client is not None, "a dask cluster: it runs in this process"),
        (pyramid, "a multiscale pyramid: write a single-level output"),
    ]
    for refused, why in refusals:
        if refused:
            raise UserInputError(f"{what} does not support {why}")
    spatial = "zyx"[-len(package.axes) :]
    if "".join(package.axes).lower() != spatial:
        raise UserInputError(
            f"{what} has space axes {', '.join(package.axes)}; supported: {', '.join(spatial)}"
        )
    return kind


def iter_foreign_job(
    image: Any,
    request: PredictRequest,
    package: ForeignPackage,
    *,
    output_path: Path | None = None,
    probabilities_path: Path | None = None,
    pyramid: bool = False,
    client: Any = None,
) -> Generator[Progress, None, PredictResult]:
    """Run a prediction request with a foreign package (arguments as for ``iter_predict_job``,
    whose checks of the paths have run), yielding Progress per tile.

    Raises
    ------
    UserInputError
        Before any work, for what foreign packages do not support (instances, halo, precision,
        device, dask, pyramid), space axes other than ``y, x`` / ``z, y, x``, or an image the
        package cannot read.
    """
    from napari_tiled_unet.axes import ModelSpec
    from napari_tiled_unet.bioimageio.foreign import foreign_labels, iter_predict_foreign
    from napari_tiled_unet.io.store import open_output, write_arrays
    from napari_tiled_unet.jobs.predict import PredictResult, read_layout

    kind = _check_request(package, request, pyramid, client)
    if probabilities_path is not None and kind == "probabilities":
        raise UserInputError("probabilities_path goes with labels or instances output")
    ndim = len(package.axes)
    layout = read_layout(image.shape, ModelSpec(package.in_channels, ndim), request)
    tile_shape = request.tile_shape(ndim)
    probabilities = labels = None
    done = 0
    for index in layout.frames():
        frame = np.asarray(layout.frame(image, index))
        events = iter_predict_foreign(
            frame, package, tile_shape=tile_shape, batch_size=int(request.batch_size or 1)
        )
        found, tiles = yield from _numbered(events, done, layout.n_frames)
        done += tiles
        if probabilities is None:
            probabilities = np.zeros((found.shape[0], *layout.output_shape), np.float32)
            labels = np.zeros(layout.output_shape, np.uint16)
        layout.frame_out(probabilities, index, lead=1)[...] = found
        if kind == "labels":
            layout.frame_out(labels, index)[...] = foreign_labels(found)
    axes = layout.output_axes
    data = probabilities if kind == "probabilities" else labels
    items = []
    if output_path is not None:
        items.append((output_path, data, ("C" if kind == "probabilities" else "") + axes))
    if probabilities_path is not None:
        items.append((probabilities_path, probabilities, "C" + axes))
    if items:
        write_arrays(items)  # published together or not at all
    if output_path is not None and probabilities_path is None:
        data = open_output(output_path)
    extra = probabilities if probabilities_path is not None else None
    return PredictResult(kind, data, layout, output_path, extra)


def _numbered(events, before: int, frames: int):
    """A frame's events counted among all frames'; returns (its result, its tiles). Closing
    it closes ``events`` (cancel)."""
    tiles = 0
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as stop:
                return stop.value, tiles
            tiles, total = event.total, event.total * frames
            yield Progress(
                "predict", before + event.done, total, f"tile {before + event.done}/{total}"
            )
    finally:
        events.close()
