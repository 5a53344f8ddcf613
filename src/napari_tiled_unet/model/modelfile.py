"""Model files: a config dict, a ``state_dict`` and metadata, never pickled code.

A file is written atomically (temporary file in the target folder, then ``os.replace``) and read
with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from napari_tiled_unet.config import UNetConfig
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.io.atomic import atomic_path
from napari_tiled_unet.model.info import ModelInfo, plain_data
from napari_tiled_unet.model.unet import UNet

FORMAT = "napari-tiled-unet model"
FORMAT_VERSION = 1


class ModelFileError(UserInputError):
    """A file is not a readable napari-tiled-unet model file."""


def save_model(model: UNet, path: str | os.PathLike, **metadata: Any) -> Path:
    """Write ``model`` and its information to ``path`` atomically.

    Parameters
    ----------
    model : UNet
        The network; its :attr:`~napari_tiled_unet.model.unet.UNet.info` is stored, updated
        with ``metadata``.
    path : path-like
        Destination file (conventionally ``*.pt``). An existing file is replaced only once the
        new one is completely written.
    **metadata
        Fields of :class:`~napari_tiled_unet.model.info.ModelInfo` to set, as values or plain
        data (e.g. ``normalization`` as a Normalization or its dict, ``class_names``,
        ``channels`` and ``source_channels``); they are validated before anything is written.
        numpy numbers and arrays become plain numbers and lists; objects a model file cannot
        hold are refused (:func:`~napari_tiled_unet.model.info.plain_data`), so every file
        written here loads with :func:`load_model`.

    Returns
    -------
    Path
        The written path.
    """
    from napari_tiled_unet import __version__

    path = Path(path)
    info = ModelInfo.from_dict(plain_data({**model.info.to_dict(), **metadata}))
    info.check_network(model.config.in_channels)
    meta = info.to_dict()
    ModelInfo.from_dict(meta)  # what load_model will read back
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "config": model.config.to_dict(),
        "metadata": meta,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    model.info = info.replace(package_version=__version__)
    return path


def _why(err: BaseException) -> str:
    """Why ``torch.load`` failed, in one line, and what to do."""
    text = str(err)
    if isinstance(err, pickle.UnpicklingError):
        refused = [line.strip() for line in text.splitlines() if "nsupported" in line]
        detail = f": {refused[0].rstrip('.')}" if refused else ""
        return (
            f"it holds pickled objects other than weights and plain data, refused without "
            f"running them{detail}. Save models with napari_tiled_unet.save_model."
        )
    first = text.splitlines()[0] if text.strip() else "no detail"
    return (
        f"{type(err).__name__}: {first}. Was it truncated, or saved by another program? "
        "Save models with napari_tiled_unet.save_model."
    )


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _check_state_dict(path: Path, model: UNet, state: Any) -> None:
    """Refuse weights that do not fit ``model`` (possibly on the meta device) or are not
    finite, in one line naming ``path``."""
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelFileError(
            f"{path} is a damaged model file: its state_dict is not a dict of named tensors"
        )
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    problems = []
    for what, names in (("missing", missing), ("unexpected", unexpected), ("misshapen", wrong)):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            problems.append(f"{len(names)} {what} ({', '.join(names[:3])}{more})")
    if problems:
        raise ModelFileError(
            f"{path} is a damaged model file: its weights do not fit the network its config "
            f"describes: {'; '.join(problems)}"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelFileError(
            f"{path} holds NaN or infinite weights ({len(bad)} of {len(state)} tensors, e.g. "
            f"{bad[0]}), which predict nothing; its training diverged: train it again, e.g. "
            "with a lower learning rate"
        )


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> UNet:
    """Read a model file written by :func:`save_model`.

    The returned :class:`UNet` is in eval mode and carries the file's information in
    ``model.info`` (a :class:`~napari_tiled_unet.model.info.ModelInfo`). The config is
    checked (a network of at most :data:`~napari_tiled_unet.config.MAX_PARAMETERS`
    parameters) before the network is built, and the weights before they are loaded.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        If the file is truncated, not a model file, holds pickled objects, describes a
        network too large to build, or holds weights that do not fit it or are not finite.
        The message is one line and names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for damaged or foreign files
        raise ModelFileError(
            f"{path} is not a readable napari-tiled-unet model file: {_why(err)}"
        ) from None

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(
            f"{path} is a PyTorch file but not a napari-tiled-unet model file (no "
            f"'format': {FORMAT!r} entry). Save models with napari_tiled_unet.save_model."
        )
    version = payload.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ModelFileError(
            f"{path} is a damaged model file: its format_version is {version!r}, not a number"
        )
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} uses model file format {version}, newer than this version of "
            f"napari-tiled-unet reads ({FORMAT_VERSION}); upgrade the package."
        )
    try:
        if not isinstance(payload.get("config"), Mapping):
            raise ModelFileError("it has no config dict")
        config = UNetConfig.from_dict(dict(payload["config"]))
        with torch.device("meta"):  # the weights' names and shapes, without allocating them
            skeleton = UNet.from_config(config)
        _check_state_dict(path, skeleton, payload.get("state_dict"))
        # Matching shapes mean the file holds every weight: building the network now takes
        # no more memory than the file's own tensors.
        model = UNet.from_config(config)
        model.load_state_dict(payload["state_dict"])
        package = payload.get("package_version")
        metadata = payload.get("metadata", {})
        if not isinstance(metadata, Mapping):
            raise ModelFileError(f"its metadata is a {type(metadata).__name__}, not a dict")
        info = ModelInfo.from_dict(
            metadata, package_version=None if package is None else str(package)
        )
        model.info = info
    except ModelFileError as err:
        if str(path) in str(err):
            raise
        raise ModelFileError(f"{path} is a damaged model file: {_one_line(err)}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        raise ModelFileError(f"{path} is a damaged model file: {_one_line(err)}") from None
    return model.eval()


def default_model_path() -> Path:
    """Path of the default model shipped with the package (see ``sample_data/README.md``)."""
    return Path(__file__).resolve().parent.parent / "sample_data" / "default_model.pt"
