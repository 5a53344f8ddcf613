"""Reading TIFF images without loading them whole."""

from __future__ import annotations

import os
from pathlib import Path

import tifffile

from napari_tiled_unet.errors import UserInputError


def tiff_levels(path: str | os.PathLike) -> int:
    """Number of pyramid levels of the first image series in the TIFF at ``path`` (1 if none)."""
    with tifffile.TiffFile(path) as tif:
        return len(tif.series[0].levels)


def tiff_axes(path: str | os.PathLike, level: int = 0) -> str:
    """Axis letters of the first image series at ``path`` as tifffile names them, e.g. ``"ZYX"``.

    ``S`` is colour samples (RGB), ``Q`` an axis of unknown meaning.
    """
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].levels[level].axes


def _check_readable(path: Path, level: int) -> None:
    """Raise a ValueError if ``path`` is no TIFF, lacks ``level`` or is cut short."""
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise UserInputError("it holds no image")
            levels = tif.series[0].levels
            if not 0 <= level < len(levels):
                raise IndexError(
                    f"pyramid level {level} requested; it has levels 0..{len(levels) - 1}"
                )
            size = path.stat().st_size
            for page in levels[level].pages:
                if page is None:
                    continue
                ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)]
                if ends and max(ends) > size:
                    raise UserInputError(
                        f"the file is truncated: image data end at byte {max(ends)}, "
                        f"the file has {size} bytes"
                    )
    except IndexError as err:
        raise UserInputError(f"{path}: {err}") from None
    except (tifffile.TiffFileError, ValueError, OSError, KeyError) as err:
        raise UserInputError(f"{path} is not a readable TIFF file ({err})") from None


def open_tiff(path: str | os.PathLike, level: int = 0):
    """Open a TIFF for tile-wise reading, without reading its pixels.

    Uncompressed, contiguous images come back as a read-only ``numpy.memmap``; tiled,
    compressed, BigTIFF, OME-TIFF and pyramidal files as a read-only ``zarr.Array`` over
    tifffile's zarr store, which decodes only the tiles or strips a slice touches.

    Parameters
    ----------
    path : path-like
        A TIFF file; its first image series is opened.
    level : int
        Pyramid level (0 = full resolution).

    Returns
    -------
    numpy.memmap or zarr.Array
        Shaped like the series, e.g. ``(Y, X)`` or ``(C, Y, X)``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable TIFF, is truncated, or has no such level.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    _check_readable(path, level)
    try:
        return tifffile.memmap(path, mode="r", series=0, level=level)
    except (ValueError, tifffile.TiffFileError, OSError):
        pass
    import zarr

    try:
        store = tifffile.imread(path, aszarr=True, series=0, level=level)
        return zarr.open_array(store, mode="r")
    except (tifffile.TiffFileError, ValueError, OSError, KeyError) as err:
        raise UserInputError(f"{path} is not a readable TIFF file ({err})") from None
