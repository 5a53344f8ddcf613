"""Model files: a config dict, a ``state_dict`` and metadata, never pickled code.

A file is written atomically (temporary file in the target folder, then ``os.replace``) and read
with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from napari_tiled_unet.config import UNetConfig
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.io.atomic import atomic_path
from napari_tiled_unet.model.info import ModelInfo
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

    Returns
    -------
    Path
        The written path.
    """
    from napari_tiled_unet import __version__

    path = Path(path)
    info = ModelInfo.from_dict({**model.info.to_dict(), **metadata})
    info.check_network(model.config.in_channels)
    meta = info.to_dict()
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


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> UNet:
    """Read a model file written by :func:`save_model`.

    The returned :class:`UNet` is in eval mode and carries the file's information in
    ``model.info`` (a :class:`~napari_tiled_unet.model.info.ModelInfo`).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        If the file is truncated, not a model file, or holds pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for damaged or foreign files
        raise ModelFileError(
            f"{path} is not a readable napari-tiled-unet model file ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}). Was it truncated, or "
            "saved by another program? Save models with napari_tiled_unet.save_model."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(
            f"{path} is a PyTorch file but not a napari-tiled-unet model file (no "
            f"'format': {FORMAT!r} entry). Save models with napari_tiled_unet.save_model."
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} uses model file format {payload['format_version']}, newer than this "
            f"version of napari-tiled-unet reads ({FORMAT_VERSION}); upgrade the package."
        )
    try:
        config = UNetConfig.from_dict(payload["config"])
        model = UNet.from_config(config)
        model.load_state_dict(payload["state_dict"])
        version = payload.get("package_version")
        info = ModelInfo.from_dict(
            payload.get("metadata", {}), package_version=None if version is None else str(version)
        )
        model.info = info
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{path} is a damaged model file: {err}") from None
    return model.eval()


def default_model_path() -> Path:
    """Path of the default model shipped with the package (see ``sample_data/README.md``)."""
    return Path(__file__).resolve().parent.parent / "sample_data" / "default_model.pt"
