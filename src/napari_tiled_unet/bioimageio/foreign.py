"""Foreign bioimage.io packages (torchscript weights) through this package's overlap-tile engine.

:func:`open_foreign` maps a package's axes, sizes, halo and processing to a tile geometry per
axis; :func:`predict_foreign` plans tiles with :func:`~napari_tiled_unet.tiling.plan.plan_tiles`
and runs them with :func:`~napari_tiled_unet.tiling.stitch.iter_run_plan`, so the stitched
result equals one forward pass over the image mirror-padded by the package's context, as for
this package's own networks. Preprocessing statistics are computed once over the whole image.
"""

from __future__ import annotations

import io
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_tiled_unet.bioimageio.package import PackageError, read_description
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.events import Progress
from napari_tiled_unet.model.geometry import TileGeometry

PRE = (
    "scale_range",
    "zero_mean_unit_variance",
    "fixed_zero_mean_unit_variance",
    "scale_linear",
    "clip",
    "ensure_dtype",
)
POST = ("softmax", "sigmoid", "binarize", "clip", "scale_linear", "ensure_dtype")
#: Default tile edge (input pixels) per number of spatial axes.
DEFAULT_EDGE = {2: 256, 3: 64}


@dataclass(frozen=True)
class PackageAxisGeometry(TileGeometry):
    """A package's spatial axis: sizes ``min + n * step``, the grid ``step``."""

    min_size: int = 1

    def output_size(self, size: int) -> int | None:
        out = size - self.shrink
        ok = size >= self.min_size and (size - self.min_size) % self.grid == 0 and out > 0
        return out if ok else None


@dataclass(frozen=True)
class ForeignPackage:
    """A torchscript package mapped to this engine: axes, geometry, processing, network."""

    path: str
    axes: tuple[str, ...]
    in_channels: int
    geometry: tuple[PackageAxisGeometry, ...]
    preprocessing: tuple[Any, ...]
    postprocessing: tuple[Any, ...]
    network: Any = field(repr=False)
    padded: bool = True  # False: a 'valid' package, which never reads mirrored context


def open_foreign(path: str | os.PathLike, *, trust_package_code: bool = False) -> ForeignPackage:
    """Read a package with torchscript weights and map it to this engine.

    Parameters
    ----------
    path : path-like
        A ``.zip``, an ``rdf.yaml`` or a folder holding one.
    trust_package_code : bool
        Allow a package without torchscript weights whose ``pytorch_state_dict`` architecture
        is Python source shipped in the package: that source is run to build the network.
        Default False: such packages are refused.

    Raises
    ------
    PackageError
        No torchscript weights, several inputs or outputs, axes other than batch, channel and
        two or three space axes, output sizes not tied to the input, processing this engine
        does not implement: one line naming what.
    """
    import torch
    from bioimageio.spec.model import v0_5 as s
    from bioimageio.spec.utils import get_reader

    descr = read_description(path)
    entry = descr.weights.torchscript
    state = descr.weights.pytorch_state_dict
    from_source = state is not None and isinstance(state.architecture, s.ArchitectureFromFileDescr)
    if entry is None and from_source and not trust_package_code:
        raise PackageError(
            f"{path}: its only usable weights need the Python source shipped in the package "
            f"({state.architecture.source}), and loading them runs that code; if you trust "
            "the package, pass --trust-package-code (napari-tiled-unet predict) or "
            "trust_package_code=True"
        )
    if entry is None and not from_source:
        formats = ", ".join(sorted(descr.weights.available_formats))
        raise PackageError(f"{path} has no torchscript weights (it holds {formats})")
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise PackageError(f"{path} has several inputs or outputs; one of each is supported")
    inp, out = descr.inputs[0], descr.outputs[0]
    axes, channels, sizes = _input_axes(path, inp, s)
    geometry = tuple(_axis_geometry(path, a, sizes[a], out, inp.id, s) for a in axes)
    for step in inp.preprocessing:
        if step.id not in PRE:
            raise PackageError(f"{path}: preprocessing {step.id!r} is not supported ({PRE})")
    for step in out.postprocessing:
        if step.id not in POST:
            raise PackageError(f"{path}: postprocessing {step.id!r} is not supported ({POST})")
    if entry is None:
        network = _network_from_source(path, state)
    else:
        try:
            data = get_reader(entry.source, sha256=entry.sha256).read()
            network = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
        except Exception as err:
            raise PackageError(f"{path}: cannot load its torchscript weights: {err}") from None
    padded = all(g.context_before > g.output_offset for g in geometry)
    return ForeignPackage(
        str(path),
        axes,
        channels,
        geometry,
        tuple(inp.preprocessing),
        tuple(out.postprocessing),
        network,
        padded,
    )


def _network_from_source(path, entry) -> Any:
    """Run the package's architecture source (the caller trusts it), build the network with
    the given kwargs and load the state dict (``weights_only=True``)."""
    import types

    import torch
    from bioimageio.spec.utils import get_reader

    arch = entry.architecture
    try:
        code = get_reader(arch.source, sha256=arch.sha256).read().decode("utf-8")
        module = types.ModuleType(f"bioimageio_package_{abs(hash(str(path)))}")
        exec(compile(code, str(arch.source), "exec"), module.__dict__)
        network = getattr(module, str(arch.callable))(**dict(arch.kwargs))
        weights = get_reader(entry.source, sha256=entry.sha256).read()
        network.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
    except Exception as err:
        raise PackageError(
            f"{path}: cannot build its network from {arch.source}: {type(err).__name__}: {err}"
        ) from None
    return network.eval()


def _input_axes(path, inp, s) -> tuple[tuple[str, ...], int, dict[str, Any]]:
    kinds = [a.type for a in inp.axes]
    spaces = [a for a in inp.axes if a.type == "space"]
    allowed = {"batch", "channel", "space"}
    if (
        set(kinds) - allowed
        or len(spaces) not in (2, 3)
        or kinds[-len(spaces) :] != ["space"] * len(spaces)
    ):
        raise PackageError(
            f"{path}: input axes {[f'{a.type}:{a.id}' for a in inp.axes]} cannot be mapped; "
            "supported: [batch,] [channel,] then two or three space axes"
        )
    channels = next((a.size for a in inp.axes if a.type == "channel"), 1)
    sizes = {}
    for a in spaces:
        if not isinstance(a.size, s.ParameterizedSize):
            raise PackageError(
                f"{path}: input axis {a.id} has size {a.size}; only parameterized sizes "
                "(min + n * step) can be tiled"
            )
        sizes[str(a.id)] = a.size
    return tuple(str(a.id) for a in spaces), int(channels), sizes


def _axis_geometry(path, axis, size, out, input_id, s) -> PackageAxisGeometry:
    match = [a for a in out.axes if str(a.id) == axis]
    ref = match[0].size if match else None
    if (
        not isinstance(ref, s.SizeReference)
        or ref.tensor_id != input_id
        or str(ref.axis_id) != axis
    ):
        raise PackageError(
            f"{path}: output axis {axis} is not sized by input axis {axis}; cannot be tiled"
        )
    if getattr(match[0], "scale", 1.0) != 1.0:
        raise PackageError(f"{path}: output axis {axis} is rescaled; cannot be tiled")
    halo = int(getattr(match[0], "halo", 0) or 0)
    trim = -int(ref.offset)
    if trim < 0 or trim % 2:
        raise PackageError(f"{path}: output axis {axis} has offset {ref.offset}; cannot be tiled")
    before = trim // 2 + halo
    return PackageAxisGeometry(
        grid=size.step,
        context_before=before,
        context_after=before,
        output_offset=trim // 2,
        shrink=trim,
        min_size=size.min,
    )


def preprocess(package: ForeignPackage, image: np.ndarray) -> np.ndarray:
    """The package's preprocessing of a whole ``(C, *spatial)`` image (statistics over it)."""
    x = np.asarray(image, dtype=np.float32)
    for step in package.preprocessing:
        x = _apply(step, x, package.axes)
    return x.astype(np.float32)


def postprocess(package: ForeignPackage, batch: np.ndarray) -> np.ndarray:
    """The package's postprocessing of a ``(B, K, *spatial)`` batch of network outputs."""
    y = batch
    for step in package.postprocessing:
        y = _apply(step, y, package.axes, batch=True)
    return y.astype(np.float32)


def _reduce_axes(kwargs, names: Sequence[str], batch: bool) -> tuple[int, ...]:
    """Array axes of the named bioimage.io axes (batch dropped: statistics are per image)."""
    order = (["batch"] if batch else []) + ["channel", *names]
    given = getattr(kwargs, "axes", None)
    chosen = [str(a) for a in given] if given is not None else order
    return tuple(order.index(a) for a in chosen if a in order and a != "batch")


def _along(kwargs, values, ndim: int, names: Sequence[str], batch: bool) -> np.ndarray:
    arr = np.asarray(values, np.float32)
    axis = getattr(kwargs, "axis", None)
    if arr.ndim == 0 or axis is None:
        return arr
    order = (["batch"] if batch else []) + ["channel", *names]
    shape = [1] * ndim
    shape[order.index(str(axis))] = arr.size
    return arr.reshape(shape)


def _apply(step, x: np.ndarray, names: Sequence[str], batch: bool = False) -> np.ndarray:
    k = step.kwargs
    if step.id == "scale_range":
        axes = _reduce_axes(k, names, batch)
        lo = np.percentile(x, k.min_percentile, axis=axes, keepdims=True)
        hi = np.percentile(x, k.max_percentile, axis=axes, keepdims=True)
        return (x - lo) / (hi - lo + k.eps)
    if step.id == "zero_mean_unit_variance":
        axes = _reduce_axes(k, names, batch)
        return (x - x.mean(axis=axes, keepdims=True)) / (x.std(axis=axes, keepdims=True) + k.eps)
    if step.id == "fixed_zero_mean_unit_variance":
        mean = _along(k, k.mean, x.ndim, names, batch)
        std = _along(k, k.std, x.ndim, names, batch)
        return (x - mean) / (std + k.eps)
    if step.id == "scale_linear":
        gain = _along(k, k.gain, x.ndim, names, batch)
        return x * gain + _along(k, k.offset, x.ndim, names, batch)
    if step.id == "clip":
        return np.clip(x, -np.inf if k.min is None else k.min, np.inf if k.max is None else k.max)
    if step.id == "ensure_dtype":
        return x.astype(np.float32)
    if step.id == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if step.id == "softmax":
        axis = 1 if batch else 0
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
    if step.id == "binarize":
        return (x > _along(k, k.threshold, x.ndim, names, batch)).astype(np.float32)
    raise UserInputError(f"processing step {step.id!r} is not supported")


def predict_foreign(
    image: np.ndarray,
    package: ForeignPackage | str | os.PathLike,
    *,
    output: str = "probabilities",
    tile_shape: Sequence[int] | None = None,
    trust_package_code: bool = False,
) -> np.ndarray:
    """Predict ``image`` (``(*spatial)`` or ``(C, *spatial)``) with a torchscript package.

    Parameters
    ----------
    output : {"probabilities", "labels"}
        The postprocessed output ``(K, *spatial)`` float32, or labels ``(*spatial)`` uint16
        (:func:`foreign_labels`).
    tile_shape : sequence of int, optional
        Network input tile (with context); default about 256 px (2D) or 64 (3D) per axis.
    trust_package_code : bool
        See :func:`open_foreign`.
    """
    from napari_tiled_unet.events import run_to_completion

    if not isinstance(package, ForeignPackage):
        package = open_foreign(package, trust_package_code=trust_package_code)
    if output not in ("probabilities", "labels"):
        raise UserInputError(f"output must be 'probabilities' or 'labels', got {output!r}")
    out = run_to_completion(iter_predict_foreign(image, package, tile_shape=tile_shape))
    return out if output == "probabilities" else foreign_labels(out)


def foreign_labels(probabilities: np.ndarray) -> np.ndarray:
    """Labels ``(*spatial)`` uint16 of a package's output ``(K, *spatial)``: the arg-max over
    channels, or for one channel the pixels above 0.5."""
    p = probabilities
    labels = p[0] > 0.5 if p.shape[0] == 1 else p.argmax(axis=0)
    return labels.astype(np.uint16)


def iter_predict_foreign(
    image: np.ndarray,
    package: ForeignPackage,
    *,
    tile_shape: Sequence[int] | None = None,
    batch_size: int = 1,
) -> Generator[Progress, None, np.ndarray]:
    """:func:`predict_foreign`'s probabilities, yielding Progress after each batch of
    ``batch_size`` tiles.

    Returns
    -------
    numpy.ndarray
        The postprocessed output ``(K, *spatial)`` float32.
    """
    import torch

    from napari_tiled_unet.tiling.plan import plan_tiles, smallest_tile
    from napari_tiled_unet.tiling.stitch import iter_run_plan

    ndim = len(package.axes)
    image = np.asarray(image)
    if image.ndim == ndim:
        image = image[None]
    if image.ndim != ndim + 1 or image.shape[0] != package.in_channels:
        raise UserInputError(
            f"{package.path} expects ({package.in_channels} channels, "
            f"{', '.join(package.axes)}); got an image of shape {image.shape}"
        )
    spatial = image.shape[1:]
    if not package.padded:
        for n, g, a in zip(spatial, package.geometry, package.axes, strict=True):
            if n < g.min_size:
                raise UserInputError(
                    f"the image is {n} px along {a}, smaller than the {g.min_size} px this "
                    f"'valid' package needs at least (it trims its own context)"
                )
    x = preprocess(package, image)
    if tile_shape is None:
        tile_shape = [
            g.nearest_valid_sizes(max(DEFAULT_EDGE[ndim], smallest_tile(g, g.grid)))[1]
            for g in package.geometry
        ]
    plan = plan_tiles(spatial, package.geometry, tile_shape)

    def run(batch: np.ndarray, tiles) -> np.ndarray:
        with torch.inference_mode():
            y = package.network(torch.from_numpy(np.ascontiguousarray(batch)))
        return postprocess(package, y.numpy())

    probe = run(np.zeros((1, package.in_channels, *plan.tile_shape), np.float32), None)
    out = np.zeros((probe.shape[1], *spatial), np.float32)
    total = len(plan)
    yield Progress("predict", 0, total, f"tile 0/{total}")
    for done in iter_run_plan(x, plan, run, out, batch_size=batch_size):
        yield Progress("predict", done, total, f"tile {done}/{total}")
    return out
