"""The files and the bioimage.io description (spec 0.5) of an exported U-Net."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.bioimageio.export import CONFIG_KEY, SCALE_RANGE_EPS
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.tiling.plan import smallest_tile

if TYPE_CHECKING:
    from napari_tiled_unet.model.unet import UNet


def axis_ids(ndim: int) -> list[str]:
    """bioimage.io ids of the spatial axes, ``["y", "x"]`` or ``["z", "y", "x"]``."""
    return ["z", "y", "x"][-ndim:]


def input_sizes(model: UNet) -> list[tuple[int, int]]:
    """Per spatial axis, the (min, step) of the sizes the package accepts.

    'same': the smallest tile that writes one grid step (2 * halo + grid); 'valid': the
    smallest size the network takes. The step is the axis's pooling grid.
    """
    sizes = []
    for g in model.geometry.axes:
        low = smallest_tile(g, g.grid) if g.padding == "same" else g.min_input_size
        sizes.append((low, g.grid))
    return sizes


def preprocess(model: UNet, tile: np.ndarray) -> np.ndarray:
    """What the exported preprocessing makes of a raw ``(C, *spatial)`` tile (float32)."""
    norm = model.info.normalization
    x = tile.astype(np.float32)
    if norm is None or norm.mode == "none":
        return x
    if norm.mode == "fixed":
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        offset, scale = (_per_channel(v, x.shape[0]) for v in (norm.offset, norm.scale))
        gain, shift = 1.0 / scale, -offset / scale
        return (x * gain.reshape(shape) + shift.reshape(shape)).astype(np.float32)
    joint = None if norm.per_channel else tuple(range(x.ndim))
    axes = tuple(range(1, x.ndim)) if joint is None else joint
    lo = np.percentile(x, norm.low, axis=axes, keepdims=True)
    hi = np.percentile(x, norm.high, axis=axes, keepdims=True)
    return ((x - lo) / (hi - lo + SCALE_RANGE_EPS)).astype(np.float32)


def _per_channel(value: Any, channels: int) -> np.ndarray:
    """A normalisation parameter (one number or one per channel) as ``channels`` float64s."""
    values = np.asarray(value if isinstance(value, tuple) else (value,), np.float64)
    return np.broadcast_to(values, (channels,)).copy() if values.size == 1 else values


def expected_output(model: UNet, tile: np.ndarray) -> np.ndarray:
    """The test output for a raw ``(C, *spatial)`` test tile, as ``bioimageio test``
    recomputes it: preprocessing (percentiles of the tile itself), one forward pass over the
    tile as it is (no padding, no cropping of the halo), softmax."""
    import torch

    x = preprocess(model, tile)
    with torch.inference_mode():
        logits = model.eval()(torch.from_numpy(x[None]))
        return torch.softmax(logits, dim=1)[0].numpy().astype(np.float32)


def cut_test_tile(model: UNet, image: np.ndarray) -> np.ndarray:
    """The centre of ``image`` at the package's smallest input size (mirror-padded where the
    image is smaller)."""
    spatial = image.shape[1:]
    window = []
    for n, (low, _) in zip(spatial, input_sizes(model), strict=True):
        start = max(0, (n - low) // 2)
        window.append(slice(start, start + low))
    tile = image[(slice(None), *window)]
    short = [(0, low - n) for n, (low, _) in zip(tile.shape[1:], input_sizes(model), strict=True)]
    if any(after for _, after in short):
        tile = np.pad(tile, [(0, 0), *short], mode="symmetric")
    return np.ascontiguousarray(tile, dtype=np.float32)


def write_cover(path: Path, tile: np.ndarray, probs: np.ndarray) -> None:
    """A 2:1 PNG: the (first channel of the) test input beside its arg-max labels."""
    import matplotlib
    from matplotlib import image as mpl_image

    labels = probs.argmax(axis=0)
    # A 'valid' network's output is the centre of its input.
    image = tile[0][
        tuple(
            slice((n - m) // 2, (n - m) // 2 + m)
            for n, m in zip(tile.shape[1:], labels.shape, strict=True)
        )
    ]
    if image.ndim == 3:  # the middle plane of a stack
        image, labels = image[image.shape[0] // 2], labels[labels.shape[0] // 2]
    lo, hi = np.percentile(image, [1, 99.8])
    gray = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    left = np.stack([gray] * 3, axis=-1)
    colours = matplotlib.colormaps["tab10"](np.arange(10))[:, :3]
    right = np.where(labels[..., None] > 0, colours[labels % 10], left * 0.5)
    mpl_image.imsave(path, np.concatenate([left, right], axis=1))


def write_readme(path: Path, model: UNet, meta: dict[str, Any]) -> None:
    config, info = model.config, model.info
    geometry = model.geometry
    lines = [
        f"# {meta['name']}",
        "",
        meta["description"],
        "",
        "## Network",
        "",
        f"The U-Net of napari-tiled-unet: {config.ndim}D, depth {config.depth}, "
        f"{config.base_channels} base channels, '{config.padding}' convolutions, "
        f"{config.in_channels} input channel(s), {config.num_classes} classes "
        f"({', '.join(info.class_names or ()) or 'unnamed'}); label mode "
        f"{info.label_mode or 'unknown'}. Tiles: {geometry.describe()} (px).",
        "",
        "## Validation",
        "",
        "The test tensors were cut from the sample image given at export; `bioimageio test` "
        "reproduces the test output from the test input with both weight formats. Blockwise "
        "prediction with the declared halo equals napari-tiled-unet's overlap-tile "
        "prediction (one forward pass over the image mirror-padded by the halo). Validation "
        "scores of the training run, where recorded: "
        + (", ".join(f"{k} {v:.3f}" for k, v in info.best_scores.items()) or "none recorded")
        + ".",
        "",
        "## Use",
        "",
        "In napari-tiled-unet: `napari-tiled-unet predict IMAGE.tif --model THIS.zip "
        "--output LABELS.tif`.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def build_package(model: UNet, image: np.ndarray, meta: dict[str, Any], folder: Path) -> Any:
    """Write the package's files into ``folder`` and return its ModelDescr (spec 0.5)."""
    import torch
    from bioimageio.spec.model import v0_5 as s

    from napari_tiled_unet import __version__

    config, info = model.config, model.info
    model = model.cpu().eval()
    ids = axis_ids(config.ndim)
    sizes = input_sizes(model)
    tile = cut_test_tile(model, image)
    probs = expected_output(model, tile)
    np.save(folder / "test_input.npy", tile[None])
    np.save(folder / "test_output.npy", probs[None])
    write_cover(folder / "cover.png", tile, probs)
    write_readme(folder / "README.md", model, meta)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / "weights.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and "tensor to Python boolean" (a check)
        traced = torch.jit.trace(model, torch.from_numpy(tile[None]))
    traced.save(str(folder / "weights_torchscript.pt"))

    channel_names = [f"channel{c}" for c in range(config.in_channels)]
    if info.channels is not None:
        channel_names = [f"channel{c}" for c in info.channels]
    input_axes = [
        s.BatchAxis(),
        s.ChannelAxis(channel_names=channel_names),
        *[
            s.SpaceInputAxis(id=s.AxisId(a), size=s.ParameterizedSize(min=low, step=step))
            for a, (low, step) in zip(ids, sizes, strict=True)
        ],
    ]
    output_space = []
    for a, g in zip(ids, model.geometry.axes, strict=True):
        ref = s.SizeReference(tensor_id=s.TensorId("input"), axis_id=s.AxisId(a))
        if config.padding == "same":
            output_space.append(
                s.SpaceOutputAxisWithHalo(id=s.AxisId(a), size=ref, halo=g.context_before)
            )
        else:
            ref = s.SizeReference(
                tensor_id=s.TensorId("input"), axis_id=s.AxisId(a), offset=-g.shrink
            )
            output_space.append(s.SpaceOutputAxis(id=s.AxisId(a), size=ref))
    class_names = list(info.class_names or [f"class{c}" for c in range(config.num_classes)])
    inputs = s.InputTensorDescr(
        id=s.TensorId("input"),
        description="raw intensities",
        axes=input_axes,
        test_tensor=s.FileDescr(source=folder / "test_input.npy"),
        data=s.IntervalOrRatioDataDescr(type="float32"),
        pad=s.ReflectPadding(mode="reflect"),
        preprocessing=_preprocessing(model, ids),
    )
    outputs = s.OutputTensorDescr(
        id=s.TensorId("probabilities"),
        description="class probabilities (softmax over the channel axis)",
        axes=[s.BatchAxis(), s.ChannelAxis(channel_names=class_names), *output_space],
        test_tensor=s.FileDescr(source=folder / "test_output.npy"),
        data=s.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[s.SoftmaxDescr(kwargs=s.SoftmaxKwargs(axis=s.AxisId("channel")))],
    )
    version = torch.__version__.split("+")[0]
    weights = s.WeightsDescr(
        pytorch_state_dict=s.PytorchStateDictWeightsDescr(
            source=folder / "weights.pt",
            architecture=s.ArchitectureFromLibraryDescr(
                import_from="napari_tiled_unet.model.unet",
                callable=s.Identifier("UNet"),
                kwargs=config.to_dict(),
            ),
            pytorch_version=s.Version(version),
        ),
        torchscript=s.TorchscriptWeightsDescr(
            source=folder / "weights_torchscript.pt",
            pytorch_version=s.Version(version),
            parent="pytorch_state_dict",
        ),
    )
    ours = {
        "format": "napari-tiled-unet model",
        "package_version": __version__,
        "unet_config": config.to_dict(),
        "metadata": info.to_dict(),
    }
    try:
        return s.ModelDescr(
            name=meta["name"],
            description=meta["description"],
            authors=[s.Author(**a) for a in meta["authors"]],
            cite=[s.CiteEntry(**c) for c in meta["cite"]],
            license=s.LicenseId(meta["license"]),
            tags=list(meta.get("tags") or []),
            documentation=s.FileDescr(source=folder / "README.md"),
            covers=[s.FileDescr(source=folder / "cover.png")],
            inputs=[inputs],
            outputs=[outputs],
            weights=weights,
            config=s.Config(**{CONFIG_KEY: ours}),
        )
    except Exception as err:  # pydantic's ValidationError: the metadata a user typed
        raise UserInputError(
            f"the package description does not validate: {_one_line(err)}"
        ) from None


def _one_line(err: Exception) -> str:
    """A pydantic ValidationError as ``field: message; ...`` (other errors as they are)."""
    try:
        entries = err.errors()  # type: ignore[attr-defined]
    except AttributeError:
        return " ".join(str(err).split())
    return "; ".join(
        f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', '')}" for e in entries
    )


def _preprocessing(model: UNet, ids: list[str]) -> list[Any]:
    """bioimage.io preprocessing reproducing the model's normalisation, then a float32 cast
    (without it, the spec casts back to the input's data type)."""
    from bioimageio.spec.model import v0_5 as s

    norm = model.info.normalization
    steps: list[Any] = []
    cast = s.EnsureDtypeDescr(kwargs=s.EnsureDtypeKwargs(dtype="float32"))
    if norm is None or norm.mode == "none":
        return [cast]
    if norm.mode == "fixed":
        channels = model.config.in_channels
        offset, scale = (_per_channel(v, channels) for v in (norm.offset, norm.scale))
        gain, shift = 1.0 / scale, -offset / scale
        if channels == 1 or (np.all(gain == gain[0]) and np.all(shift == shift[0])):
            kwargs = s.ScaleLinearKwargs(gain=float(gain[0]), offset=float(shift[0]))
        else:
            kwargs = s.ScaleLinearAlongAxisKwargs(
                axis=s.AxisId("channel"),
                gain=[float(v) for v in gain],
                offset=[float(v) for v in shift],
            )
        return [s.ScaleLinearDescr(kwargs=kwargs), cast]
    if norm.high <= 1:
        raise UserInputError(
            f"bioimage.io's scale_range needs an upper percentile above 1; this model "
            f"normalises with {norm.high}"
        )
    axes = ids if norm.per_channel else ["channel", *ids]
    steps.append(
        s.ScaleRangeDescr(
            kwargs=s.ScaleRangeKwargs(
                axes=[s.AxisId(a) for a in axes],
                min_percentile=norm.low,
                max_percentile=norm.high,
                eps=SCALE_RANGE_EPS,
            )
        )
    )
    return [*steps, cast]
