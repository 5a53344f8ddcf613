"""Export a U-Net as a bioimage.io model package (spec 0.5): :func:`export_bioimageio`.

The package holds ``pytorch_state_dict`` weights whose architecture is this package's
:class:`~napari_tiled_unet.model.unet.UNet` (``import_from``), ``torchscript`` weights as a
second format, test tensors cut from a sample image, a cover, a README and, under
``config.napari_tiled_unet``, everything a model file holds so that re-importing restores it.
The declared halo is the network's context (a whole number of pooling-grid steps), so
bioimage.io's blockwise prediction computes what this package's tiler computes.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_tiled_unet.bioimageio.metadata import default_export_metadata
from napari_tiled_unet.errors import UserInputError

if TYPE_CHECKING:
    from napari_tiled_unet.model.unet import UNet

#: Key under the package's ``config`` that holds this package's own information.
CONFIG_KEY = "napari_tiled_unet"
#: ``eps`` of the exported ``scale_range`` (bioimage.io's default).
SCALE_RANGE_EPS = 1e-6
INSTALL_HINT = (
    "bioimage.io support needs the optional dependencies: pip install "
    "'napari-tiled-unet[bioimageio]' && pip install --no-deps bioimageio.core==0.11.0"
)


def require_bioimageio() -> None:
    """Raise a UserInputError saying how to install bioimageio.spec if it is missing."""
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise UserInputError(INSTALL_HINT) from None


def export_bioimageio(
    model: UNet | str | os.PathLike,
    path: str | os.PathLike,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[Mapping[str, str] | str] | None = None,
    license: str | None = None,
    cite: Sequence[Mapping[str, str]] | None = None,
    tags: Sequence[str] | None = None,
    sample_image: np.ndarray | None = None,
) -> Path:
    """Write ``model`` as a bioimage.io model package (a ``.zip``), atomically.

    Parameters
    ----------
    model : UNet or path-like
        The network (with its ``info``: normalisation, class names, label mode, ...) or a
        model file written by :func:`~napari_tiled_unet.save_model`.
    path : path-like
        The package to write, conventionally ``NAME.zip``.
    name, description, authors, license, cite, tags
        The package's metadata; each one left out takes its value from
        :func:`~napari_tiled_unet.bioimageio.default_export_metadata`. ``authors``: names or
        dicts with ``name`` (and optionally ``affiliation``, ``orcid``, ``github_user``);
        ``cite``: dicts with ``text`` and a ``doi`` or ``url``; ``license``: an SPDX id.
    sample_image : numpy.ndarray, optional
        Raw intensities, ``(*spatial)`` for a one-channel network or ``(C, *spatial)``, from
        which the test tensors and the cover are cut (the centre, at the network's smallest
        input size). Default: a seeded synthetic image (blobs on noise).

    Returns
    -------
    Path
        The written package.
    """
    require_bioimageio()
    from napari_tiled_unet.bioimageio.build import build_package
    from napari_tiled_unet.io.atomic import atomic_path
    from napari_tiled_unet.model.modelfile import load_model
    from napari_tiled_unet.model.unet import UNet

    if not isinstance(model, UNet):
        model = load_model(model)
    path = Path(path)
    if path.suffix.lower() != ".zip":
        raise UserInputError(f"a bioimage.io package is a .zip file; got {path.name!r}")
    meta = default_export_metadata(model)
    given = {
        "name": name,
        "description": description,
        "authors": None if authors is None else [_author(a) for a in authors],
        "license": license,
        "cite": None if cite is None else [dict(c) for c in cite],
        "tags": None if tags is None else list(tags),
    }
    meta.update({k: v for k, v in given.items() if v is not None})
    image = _sample(model, sample_image)
    with tempfile.TemporaryDirectory(prefix="napari-tiled-unet-export-") as folder:
        descr = build_package(model, image, meta, Path(folder))
        with atomic_path(path) as tmp:
            _save(descr, tmp)
    return path


def export_model_file(
    model: str | os.PathLike | None,
    path: str | os.PathLike,
    *,
    sample_image: str | os.PathLike | None = None,
    cite: Sequence[str] = (),
    **metadata: Any,
) -> Path:
    """:func:`export_bioimageio` from files, as the command line gives them.

    Parameters
    ----------
    model : path-like or None
        Model file; None: the bundled model (whose sample image is then the default).
    path : path-like
        The package to write.
    sample_image : path-like, optional
        A TIFF to cut the test tensors from.
    cite : sequence of str
        Further citations as ``"TEXT|DOI_OR_URL"``, after the default ones.
    **metadata
        ``name``, ``description``, ``authors``, ``license`` (None: the default).
    """
    from napari_tiled_unet.model.modelfile import default_model_path, load_model

    require_bioimageio()
    source = Path(model) if model else default_model_path()
    output = Path(path)
    if output.exists() and output.resolve() == source.resolve():
        raise UserInputError(f"--output {output} is the model file itself; choose another name")
    net = load_model(source)
    if sample_image is None and model is None:
        sample_image = default_model_path().parent / "nuclei.tif"
    image = None
    if sample_image is not None:
        import tifffile

        image = tifffile.imread(sample_image)
    entries = None
    if cite:
        entries = default_export_metadata(net)["cite"]
        for entry in cite:
            text, sep, ref = entry.rpartition("|")
            if not sep or not text.strip() or not ref.strip():
                raise UserInputError(f"--cite wants 'TEXT|DOI_OR_URL', got {entry!r}")
            key = "url" if ref.strip().startswith(("http://", "https://")) else "doi"
            entries.append({"text": text.strip(), key: ref.strip()})
    return export_bioimageio(net, output, cite=entries, sample_image=image, **metadata)


def _author(author: Mapping[str, str] | str) -> dict[str, str]:
    if isinstance(author, str):
        return {"name": author}
    if not isinstance(author, Mapping) or not author.get("name"):
        raise UserInputError(f"an author is a name or a dict with a 'name', got {author!r}")
    return dict(author)


def _save(descr: Any, tmp: Path) -> None:
    from bioimageio.spec import save_bioimageio_package

    # The writer wants a .zip name; the atomic temporary is renamed onto the package after.
    target = tmp.with_name(tmp.name + ".zip")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            save_bioimageio_package(descr, output_path=target)
        os.replace(target, tmp)
    finally:
        target.unlink(missing_ok=True)


def _sample(model: UNet, image: np.ndarray | None) -> np.ndarray:
    """``image`` as float32 ``(C, *spatial)`` with the network's input channels."""
    config = model.config
    if image is None:
        return synthetic_sample(config.in_channels, (256,) * config.ndim)
    image = np.asarray(image)
    if image.ndim == config.ndim:
        image = image[None]
    selection, source = model.info.channels, model.info.source_channels
    if image.ndim == config.ndim + 1 and selection is not None and image.shape[0] == source:
        image = image[list(selection)]
    if image.ndim != config.ndim + 1 or image.shape[0] != config.in_channels:
        raise UserInputError(
            f"sample_image must be (C, {', '.join('ZYX'[-config.ndim :])}) with "
            f"C = {config.in_channels} (the network's input channels), got shape {image.shape}"
        )
    return image.astype(np.float32)


def synthetic_sample(channels: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A seeded ``(channels, *shape)`` float32 image: bright blobs on a noisy background."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    blobs = ndimage.gaussian_filter((rng.random(shape) > 0.995).astype(np.float32), 4)
    blobs /= max(float(blobs.max()), 1e-6)
    noise = rng.normal(0.0, 0.05, (channels, *shape)).astype(np.float32)
    return (1000 * (0.2 + blobs[None] + noise)).astype(np.float32)
