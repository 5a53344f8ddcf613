"""Reading a bioimage.io model package (a ``.zip``, an ``rdf.yaml`` or a folder holding one).

A package exported by this plugin loads as the same :class:`~napari_tiled_unet.model.unet.UNet`
(weights read with ``torch.load(..., weights_only=True)``, information from
``config.napari_tiled_unet``), so it predicts bit-identically to the original model file and
can be fine-tuned (pass the loaded network as ``model=`` to training). Packages whose weights
need the package's own Python source are refused (that would run the package's code), and
so, in this version, are packages of other architectures, naming the formats they hold.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_tiled_unet.bioimageio.export import CONFIG_KEY, require_bioimageio
from napari_tiled_unet.errors import UserInputError

if TYPE_CHECKING:
    from napari_tiled_unet.model.unet import UNet

#: Names of a package's description file.
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: Where an exported package's architecture comes from.
OUR_ARCHITECTURE = ("napari_tiled_unet.model.unet", "UNet")


class PackageError(UserInputError):
    """A bioimage.io package that cannot be used, with what to do about it."""


def is_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a bioimage.io package rather than a model file: a ``.zip``, an
    ``rdf.yaml`` / ``bioimageio.yaml`` file, or a folder holding one."""
    path = Path(path)
    if path.suffix.lower() == ".zip" or path.name in RDF_NAMES:
        return True
    return path.is_dir() and any((path / name).is_file() for name in RDF_NAMES)


def package_source(path: str | os.PathLike) -> Path:
    """The file to open for ``path``: a folder's ``rdf.yaml``, else ``path`` itself."""
    path = Path(path)
    if path.is_dir():
        for name in RDF_NAMES:
            if (path / name).is_file():
                return path / name
        raise PackageError(f"{path} is a folder without an rdf.yaml: not a bioimage.io package")
    return path


def read_description(path: str | os.PathLike) -> Any:
    """The package's validated model description (spec 0.5), file hashes checked.

    Raises
    ------
    PackageError
        Not a readable model package, not a model, an older format, a file missing, or a
        file whose sha256 differs from the one the description gives: one line, naming it.
    """
    require_bioimageio()
    from bioimageio.spec import load_description
    from bioimageio.spec.model import v0_5

    source = package_source(path)
    if not source.exists():
        raise FileNotFoundError(f"bioimage.io package not found: {source}")
    try:
        descr = load_description(source, perform_io_checks=True)
    except Exception as err:  # a damaged zip, unreadable YAML, ...
        raise PackageError(f"{path} is not a readable bioimage.io package: {_first(err)}") from None
    if not isinstance(descr, v0_5.ModelDescr):
        missing = _missing_files(source)
        if missing:
            raise PackageError(
                f"{path} is damaged: it lacks {', '.join(missing)}, which its rdf.yaml names"
            )
        summary = getattr(descr, "validation_summary", None)
        errors = [] if summary is None else [e for d in summary.details for e in d.errors]
        why = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors[:3])
        kind = getattr(descr, "type", None)
        raise PackageError(
            f"{path} is not a valid bioimage.io model package (format 0.5)"
            + (f": {why}" if why else f" (type {kind!r})")
        )
    return descr


def _missing_files(source: Path) -> list[str]:
    """Files the description names (``source: NAME``, not URLs) that the package lacks."""
    import re
    import zipfile

    try:
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as z:
                names = set(z.namelist())
                text = next(
                    (z.read(n).decode("utf-8", "replace") for n in RDF_NAMES if n in names), ""
                )
            present = names.__contains__
        else:
            text = source.read_text(encoding="utf-8", errors="replace")
            present = lambda name: (source.parent / name).is_file()  # noqa: E731
    except (OSError, zipfile.BadZipFile):
        return []
    found = re.findall(r"^\s*-?\s*source:\s*['\"]?([^'\"\s]+)", text, flags=re.MULTILINE)
    return [f for f in dict.fromkeys(found) if "://" not in f and not present(f)]


def _first(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else 'no detail'}"


def load_package(path: str | os.PathLike, map_location: Any = "cpu") -> UNet:
    """Load a bioimage.io model package as a network for this plugin.

    Parameters
    ----------
    path : path-like
        A ``.zip``, an ``rdf.yaml`` or a folder holding one.
    map_location : str or torch.device
        Where to put the weights (as for ``torch.load``).

    Returns
    -------
    UNet
        For a package exported by this plugin: the network and its information, as
        :func:`~napari_tiled_unet.load_model` reads it from the original model file.

    Raises
    ------
    PackageError
        For a package that is damaged (missing file, hash mismatch), holds only weight
        formats this plugin cannot run (foreign architectures, torchscript-only packages), or
        needs Python source shipped in the package (never run).
    """
    from bioimageio.spec.model import v0_5

    descr = read_description(path)
    weights = descr.weights
    state = weights.pytorch_state_dict
    ours = _our_config(descr)
    if is_own_description(descr):
        return _our_unet(path, descr, ours, map_location)
    if state is not None and isinstance(state.architecture, v0_5.ArchitectureFromFileDescr):
        raise PackageError(
            f"{path}: its pytorch_state_dict weights need the Python source shipped in the "
            f"package ({state.architecture.source}); loading it runs that code. If you trust "
            "the package, predict with it: napari-tiled-unet predict IMAGE --model PATH "
            "--trust-package-code, or from Python napari_tiled_unet.bioimageio."
            "predict_foreign(image, path, trust_package_code=True)"
        )
    formats = sorted(weights.available_formats)
    hint = (
        "; predict with its torchscript weights through this plugin's tiler: "
        "napari-tiled-unet predict IMAGE --model PATH (PredictRequest(model=PATH)), or "
        "napari_tiled_unet.bioimageio.predict_foreign(image, path)"
        if "torchscript" in formats
        else ""
    )
    raise PackageError(
        f"{path} holds weights in {', '.join(formats)}; load_package takes packages "
        f"exported by napari-tiled-unet (pytorch_state_dict of napari_tiled_unet.model.unet.UNet)"
        + hint
    )


def is_own_description(descr: Any) -> bool:
    """Whether a package description holds a network of this plugin's architecture."""
    from bioimageio.spec.model import v0_5

    state = descr.weights.pytorch_state_dict
    if state is None or not isinstance(state.architecture, v0_5.ArchitectureFromLibraryDescr):
        return False
    return (state.architecture.import_from, str(state.architecture.callable)) == OUR_ARCHITECTURE


def is_own_package(path: str | os.PathLike) -> bool:
    """Whether the package at ``path`` holds a network of this plugin's architecture, which
    :func:`load_package` loads (others run through :mod:`~napari_tiled_unet.bioimageio.foreign`).

    Raises
    ------
    PackageError
        As :func:`read_description`.
    """
    return is_own_description(read_description(path))


def _our_config(descr: Any) -> Mapping[str, Any] | None:
    config = descr.config.model_extra or {}
    ours = config.get(CONFIG_KEY)
    return ours if isinstance(ours, Mapping) else None


def _our_unet(path: Any, descr: Any, ours: Mapping[str, Any] | None, map_location: Any) -> UNet:
    """The network of a package exported by this plugin, with its model-file information."""
    import torch

    from napari_tiled_unet.config import UNetConfig
    from napari_tiled_unet.model.info import ModelInfo
    from napari_tiled_unet.model.unet import UNet

    entry = descr.weights.pytorch_state_dict
    try:
        config = UNetConfig.from_dict(dict(entry.architecture.kwargs))
    except (TypeError, ValueError) as err:
        raise PackageError(
            f"{path}: its architecture kwargs are not a U-Net config: {err}"
        ) from None
    data = _read_bytes(path, entry)
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
        model = UNet.from_config(config)
        model.load_state_dict(state)
    except Exception as err:  # unpickling refused, missing or misshapen tensors
        raise PackageError(
            f"{path}: its pytorch_state_dict weights do not load into the U-Net its "
            f"architecture describes: {_first(err)}"
        ) from None
    metadata = (ours or {}).get("metadata") or {}
    version = (ours or {}).get("package_version")
    try:
        model.info = ModelInfo.from_dict(
            dict(metadata), package_version=None if version is None else str(version)
        )
    except ValueError as err:
        raise PackageError(f"{path}: its config.{CONFIG_KEY}.metadata is damaged: {err}") from None
    return model.eval()


def _read_bytes(path: Any, entry: Any) -> bytes:
    """The content of a weights entry, checked against its sha256."""
    from bioimageio.spec.utils import get_reader

    try:
        reader = get_reader(entry.source, sha256=entry.sha256)
        return reader.read()
    except Exception as err:
        raise PackageError(
            f"{path}: cannot read its weights {entry.source}: {_first(err)}"
        ) from None
