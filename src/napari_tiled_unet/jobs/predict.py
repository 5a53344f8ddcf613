"""The prediction job: one request, planned and run the same way for every face.

The command line, the Predict widget, a dask task or a future service build a
:class:`PredictRequest`, run :func:`iter_predict_job` (a generator of
:class:`~napari_tiled_unet.events.Progress` events) and present the :class:`PredictResult`.
Every rule that would otherwise be repeated per face lives here: which model "no model" means,
what output "auto" means, how a tile edge becomes a tile shape, how the image's layout is
chosen from the user's axes and the hints of its file or layer, and which engine path
(in memory, streamed to a file, on a dask cluster, with or without probabilities) runs it.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.events import Progress

if TYPE_CHECKING:
    from napari_tiled_unet.axes import Layout, ModelSpec
    from napari_tiled_unet.model.info import ModelInfo
    from napari_tiled_unet.model.unet import UNet

OUTPUT_KINDS = ("auto", "labels", "instances", "probabilities")
ModelSource = Any  # UNet, a model-file path, or None for the bundled default model


@dataclass(frozen=True)
class LayoutHints:
    """What an image's container says about its axes, for :func:`read_layout`.

    Parameters
    ----------
    tiff_axes : str, optional
        The axes tifffile reports for a TIFF file (e.g. ``"ZCYX"``; ``S`` is a channel).
    rgb : bool, optional
        A napari layer's ``rgb`` flag (None: no layer).
    axis_labels : sequence of str, optional
        A napari layer's ``axis_labels``.
    """

    tiff_axes: str | None = None
    rgb: bool | None = None
    axis_labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.axis_labels is not None:
            object.__setattr__(self, "axis_labels", tuple(str(a) for a in self.axis_labels))


@dataclass(frozen=True)
class PredictRequest:
    """Everything a prediction job needs besides the image.

    Parameters
    ----------
    model : UNet, ForeignPackage, path-like or None
        The network, a model file or a bioimage.io package (this plugin's, or another
        architecture's with torchscript weights); None: the bundled default model.
    output : {"auto", "labels", "instances", "probabilities"}
        "auto": "instances" for a model trained on instance labels, else "labels".
    tile : int or None
        Network input tile edge in pixels along every spatial axis (context included);
        None or 0: the engine's memory-based default.
    halo : int or None
        Context per tile side for 'same' networks; None: exact (the receptive field).
    batch_size : int or None
        Tiles per forward pass; None: 1 on the CPU, from the memory estimate on a GPU.
    device : str or tuple of str
        "auto", "cpu", "cuda", "cuda:N" or "mps"; several devices ("cuda:0,cuda:1", a
        tuple, or "cuda:all"): one worker per device, sharing the tiles (local runs only).
    precision : {"float32", "bfloat16", "float16"}
        Arithmetic of the forward pass.
    axes : str, optional
        The image's axes as the user names them (e.g. ``"TZCYX"``); None: from the hints and
        the model.
    channels : sequence of int, optional
        Channels of the C axis to feed the model; None: all, or the model's stored selection.
    hints : LayoutHints
        Axis hints of the image's file or layer.
    name : str
        How messages name the image (a layer name, ``input PATH``).
    trust_package_code : bool
        Allow a bioimage.io package whose network is built by Python source it ships (that
        code is run); default False: such packages are refused.
    diameter : float or "auto", optional
        The image's typical object diameter in pixels: predict with the image rescaled to
        the model's training object size (:mod:`napari_tiled_unet.rescale`; the image is
        then held in memory); "auto": measured from a first prediction. None or 0: off.
    """

    model: ModelSource = None
    output: str = "auto"
    tile: int | None = None
    halo: int | None = None
    batch_size: int | None = None
    device: str | tuple[str, ...] = "auto"
    precision: str = "float32"
    axes: str | None = None
    channels: tuple[int, ...] | None = None
    hints: LayoutHints = field(default_factory=LayoutHints)
    name: str = "image"
    trust_package_code: bool = False
    diameter: float | str | None = None

    def __post_init__(self) -> None:
        from napari_tiled_unet.device import PRECISIONS
        from napari_tiled_unet.rescale import check_diameter

        object.__setattr__(self, "diameter", check_diameter(self.diameter))

        if self.output not in OUTPUT_KINDS:
            raise UserInputError(f"output must be one of {OUTPUT_KINDS}, got {self.output!r}")
        if self.precision not in PRECISIONS:
            raise UserInputError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("tile", "halo"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | np.integer) or value < 0):
                raise UserInputError(f"{name} must be a non-negative integer, got {value!r}")
        if self.batch_size is not None and (
            not isinstance(self.batch_size, int | np.integer) or self.batch_size < 1
        ):
            raise UserInputError(f"batch_size must be at least 1, got {self.batch_size!r}")
        if self.channels is not None:
            object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not isinstance(self.device, str):
            object.__setattr__(self, "device", tuple(str(d) for d in self.device))
        if self.axes is not None and not self.axes.strip():
            object.__setattr__(self, "axes", None)

    def output_kind(self, info: ModelInfo) -> str:
        """The output to compute: ``output``, with "auto" decided by the model's label mode."""
        if self.output != "auto":
            return self.output
        return "instances" if info.predicts_instances else "labels"

    def tile_shape(self, ndim: int) -> tuple[int, ...] | None:
        """The network tile shape for an ``ndim``-D model (None: the engine's default)."""
        return (int(self.tile),) * ndim if self.tile else None

    def engine_options(self, ndim: int) -> dict[str, Any]:
        """Keyword arguments shared by the engine's prediction functions."""
        return dict(
            tile_shape=self.tile_shape(ndim),
            halo=self.halo,
            batch_size=None if self.batch_size is None else int(self.batch_size),
            device=self.device,
            name=self.name,
            precision=self.precision,
        )


@dataclass(frozen=True)
class PredictResult:
    """What a prediction job produced.

    Attributes
    ----------
    output : str
        The output kind computed ("labels", "instances" or "probabilities"; never "auto").
    data : array-like or list
        The result: a numpy array, the written file opened lazily, or ``[level0, level1,
        ...]`` when a pyramid was written.
    layout : Layout
        How the image was read; the result has ``layout.output_axes`` (probabilities add a
        leading class axis).
    path : Path or None
        The file the result was written to, if any.
    probabilities : array-like or None
        Class probabilities when they were asked for beside the labels.
    """

    output: str
    data: Any
    layout: Layout
    path: Path | None = None
    probabilities: Any = None


def load_job_model(source: ModelSource) -> UNet:
    """The network for a request: a UNet as it is, a model file or bioimage.io package loaded,
    None the bundled model.

    Raises
    ------
    UserInputError
        If the bundled default model is not installed, saying what to choose instead.
    """
    from napari_tiled_unet.inference import resolve_model
    from napari_tiled_unet.jobs.paths import check_input_file
    from napari_tiled_unet.model.modelfile import default_model_path

    if isinstance(source, str | os.PathLike):
        from napari_tiled_unet.bioimageio.package import is_package, load_package

        if is_package(source):  # a bioimage.io package: .zip, rdf.yaml or a folder with one
            return load_package(source)
        check_input_file(source, "model file")  # a FIFO would block torch.load
    if source is None and not default_model_path().is_file():
        raise UserInputError(
            f"the bundled default model is not installed (no file {default_model_path()}); "
            "choose a model file (*.pt: 'model file' in the Predict widget, --model on the "
            "command line), or train one (the Train widget, napari-tiled-unet train)"
        )
    return resolve_model(source)


def read_spec(source: ModelSource, *, trust_package_code: bool = False) -> ModelSpec:
    """What the model of ``source`` takes (channels, dimensions, stored channel selection);
    for a foreign bioimage.io package, its input channels and space axes."""
    from napari_tiled_unet.axes import ModelSpec
    from napari_tiled_unet.jobs.foreign import foreign_package

    package = foreign_package(source, trust_package_code=trust_package_code)
    if package is not None:
        return ModelSpec(package.in_channels, len(package.axes))
    return ModelSpec.of(load_job_model(source))


def read_layout(shape: Sequence[int], model: UNet | ModelSpec, request: PredictRequest) -> Layout:
    """How ``model`` reads an image of ``shape`` under ``request`` (its axes, channels, hints).

    Raises
    ------
    AxesError
        For an impossible or ambiguous layout, listing the readings considered.
    """
    return layout_from_hints(
        shape, model, request.axes, request.channels, request.hints, name=request.name
    )


def layout_from_hints(
    shape: Sequence[int],
    model: UNet | ModelSpec,
    axes: str | None,
    channels: Sequence[int] | None,
    hints: LayoutHints,
    *,
    name: str,
    labels_shape: Sequence[int] | None = None,
) -> Layout:
    """:func:`~napari_tiled_unet.axes.choose_layout` with the user's axes and channels and the hints."""
    from napari_tiled_unet.axes import choose_layout

    return choose_layout(
        shape,
        model,
        axes=axes,
        channels=channels,
        tiff_axes=hints.tiff_axes,
        rgb=hints.rgb,
        axis_labels=hints.axis_labels,
        labels_shape=labels_shape,
        name=name,
    )


def open_input(path: str | os.PathLike, request: PredictRequest) -> tuple[Any, PredictRequest]:
    """Open a TIFF lazily and complete ``request`` with its axes and its name in messages."""
    import dataclasses

    from napari_tiled_unet.io.tiff import open_tiff, tiff_axes

    path = Path(path)
    image = open_tiff(path)
    axes = tiff_axes(path)
    names = ", ".join(TIFF_AXIS_NAMES.get(a, a) for a in axes)
    request = dataclasses.replace(
        request,
        hints=dataclasses.replace(request.hints, tiff_axes=axes),
        name=f"input {path} (TIFF axes {axes}: {names})",
    )
    return image, request


# Axis letters as tifffile reports them (tifffile.TIFF.AXES_NAMES, abridged).
TIFF_AXIS_NAMES = {
    "X": "width",
    "Y": "height",
    "Z": "depth",
    "C": "channel",
    "S": "sample/colour",
    "T": "time",
    "I": "sequence",
    "Q": "other",
}


def check_targets(source: Path | None, *targets: Path | None, model: ModelSource = None) -> None:
    """Refuse outputs that cannot be written as asked, or that are, hold or lie inside the
    input file, the model file or one another (see :mod:`napari_tiled_unet.jobs.paths`)."""
    from napari_tiled_unet.io.store import check_output_path
    from napari_tiled_unet.jobs.paths import check_input_file, check_job_paths

    inputs = []
    if source is not None:
        inputs.append(("input file", check_input_file(source)))
    if isinstance(model, str | os.PathLike):
        inputs.append(("model file", model))
    names = ("output", "probabilities output")
    check_job_paths(inputs, [(name, t) for name, t in zip(names, targets, strict=False)])
    for target in targets:
        if target is not None:
            check_output_path(target)


def iter_predict_job(
    image: Any,
    request: PredictRequest,
    *,
    output_path: str | os.PathLike | None = None,
    probabilities_path: str | os.PathLike | None = None,
    pyramid: bool = False,
    client: Any = None,
) -> Generator[Progress, None, PredictResult]:
    """Run a prediction request, yielding Progress; return a :class:`PredictResult`.

    Parameters
    ----------
    image : array-like or path-like
        The image (numpy, memmap, zarr, dask, a napari layer's data), or a TIFF file opened
        lazily (its axes become the layout hint and its path names it in messages).
    request : PredictRequest
        What to compute and how.
    output_path : path-like, optional
        Stream the result into this ``.tif``/``.tiff``/``.zarr`` file (published only when
        complete); the result is returned opened lazily. None: a numpy array in memory.
    probabilities_path : path-like, optional
        Also write class probabilities here (C first, float32); the labels or instances are
        then derived from them, and the probabilities of the image are held in memory.
        Needs ``output_path``.
    pyramid : bool
        With a ``.zarr`` ``output_path``: write coarser levels beside it (``<name>-levels/``)
        and return ``[level0, level1, ...]`` (opened for painting) when there is more than
        one, so that a viewer reads only what it shows.
    client : distributed.Client, optional
        Run the tiles on this dask cluster; results equal the local ones.

    Raises
    ------
    UserInputError
        (and its subclasses, e.g. AxesError) for a request the image or model cannot satisfy,
        before any work.
    """
    from napari_tiled_unet.inference import image_layout
    from napari_tiled_unet.jobs.foreign import foreign_package, iter_foreign_job, model_file
    from napari_tiled_unet.jobs.work import iter_with_warning, small_tile_warning

    targets = [None if p is None else Path(p) for p in (output_path, probabilities_path)]
    if isinstance(image, str | os.PathLike):
        check_targets(Path(image), *targets, model=model_file(request.model))
        image, request = open_input(Path(image), request)
    else:
        check_targets(None, *targets, model=model_file(request.model))
    if probabilities_path is not None and output_path is None:
        raise UserInputError("probabilities_path needs an output_path for the labels")
    package = foreign_package(request.model, trust_package_code=request.trust_package_code)
    if package is not None and request.diameter is not None:
        raise UserInputError(
            "a diameter needs a model file of this plugin (it stores the "
            "training object size); this bioimage.io package has none"
        )
    if package is not None:  # another architecture's bioimage.io package
        paths = dict(output_path=targets[0], probabilities_path=targets[1])
        job = iter_foreign_job(image, request, package, **paths, pyramid=pyramid, client=client)
        return (yield from job)
    model = load_job_model(request.model)
    kind = request.output_kind(model.info)
    if request.diameter is not None:
        from napari_tiled_unet.jobs.diameter import check_diameter_job

        check_diameter_job(model, client, probabilities_path, pyramid)
    if probabilities_path is not None and kind == "probabilities":
        raise UserInputError("probabilities_path goes with labels or instances output")
    layout = image_layout(image, model, axes=read_layout(image.shape, model, request))
    options = request.engine_options(model.config.ndim)
    path = None if output_path is None else Path(output_path)
    warning = small_tile_warning(
        layout.spatial_shape, model, options["tile_shape"], options["halo"]
    )

    if probabilities_path is not None:
        labels, probabilities = yield from iter_with_warning(
            _iter_labels_and_probabilities(
                image, model, layout, kind, options, client, path, Path(probabilities_path)
            ),
            warning,
        )
        return PredictResult(kind, labels, layout, path, probabilities)
    if request.diameter is not None:
        options["diameter"] = request.diameter
    if path is None:
        data = yield from iter_with_warning(
            _iter_in_memory(image, model, layout, kind, options, client), warning
        )
        return PredictResult(kind, data, layout)
    data = yield from iter_with_warning(
        _iter_to_file(image, model, layout, kind, options, client, path, pyramid), warning
    )
    return PredictResult(kind, data, layout, path)


def predict_job(image: Any, request: PredictRequest, **kwargs: Any) -> PredictResult:
    """Blocking form of :func:`iter_predict_job`."""
    from napari_tiled_unet.events import run_to_completion

    return run_to_completion(iter_predict_job(image, request, **kwargs))


def _iter_in_memory(image, model, layout, kind, options, client):
    if client is None:
        from napari_tiled_unet.inference import iter_predict

        return (yield from iter_predict(image, model, axes=layout, output=kind, **options))
    from napari_tiled_unet.distributed import iter_predict_dask

    return (
        yield from iter_predict_dask(
            image, model, axes=layout, output=kind, client=client, **options
        )
    )


def _iter_to_file(image, model, layout, kind, options, client, path, pyramid):
    from napari_tiled_unet.io.store import create_output, open_output

    if options.get("diameter") is not None:  # rescaled in memory, then written whole
        from napari_tiled_unet.inference import iter_predict, layout_output_spec
        from napari_tiled_unet.io.store import write_arrays

        data = yield from iter_predict(image, model, axes=layout, output=kind, **options)
        write_arrays([(path, data, layout_output_spec(model, layout, kind)[2])])
    elif client is None:
        from napari_tiled_unet.inference import iter_predict_to_file

        yield from iter_predict_to_file(image, path, model, output=kind, axes=layout, **options)
    else:
        from napari_tiled_unet.distributed import iter_predict_dask
        from napari_tiled_unet.inference import layout_output_spec

        shape, dtype, axes = layout_output_spec(model, layout, kind)
        scratch = dict(scratch_dir=path.parent, scratch_name=f"{path.name}.classes")
        with create_output(path, shape, dtype, axes=axes) as out:
            yield from iter_predict_dask(
                image, model, out, axes=layout, output=kind, client=client, **scratch, **options
            )
    if not pyramid:
        return open_output(path)
    import zarr

    from napari_tiled_unet.io.pyramid import iter_write_pyramid

    result = zarr.open_array(str(path), mode="r+")  # the store is the caller's: paintable
    # A pyramid, so a viewer reads only what it shows; one big array napari would read whole,
    # twice, on the GUI thread (23 s for a 32768² result).
    levels = yield from iter_write_pyramid(result, path.with_name(path.stem + "-levels"))
    return levels if len(levels) > 1 else result


def _iter_labels_and_probabilities(image, model, layout, kind, options, client, path, probs_path):
    """Probabilities in memory, then labels or instances from them, frame by frame."""
    from napari_tiled_unet.io.store import write_arrays
    from napari_tiled_unet.postprocess import labels_from_probabilities
    from napari_tiled_unet.separation import InstanceOptions

    probabilities = yield from _iter_in_memory(
        image, model, layout, "probabilities", options, client
    )
    mode = "instance" if kind == "instances" else "semantic"
    instance_options = InstanceOptions.for_model(model.info)
    labels = None
    for index in layout.frames():  # objects never join across iterated axes
        frame = np.asarray(layout.frame_out(probabilities, index, lead=1))
        found = labels_from_probabilities(frame, mode, options=instance_options)
        if labels is None:
            labels = np.zeros(layout.output_shape, found.dtype)
        layout.frame_out(labels, index)[...] = found
    # Both files or neither: a full disk must not leave labels without their probabilities.
    write_arrays(
        [(path, labels, layout.output_axes), (probs_path, probabilities, "C" + layout.output_axes)]
    )
    return labels, probabilities
