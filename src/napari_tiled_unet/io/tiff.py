"""Reading TIFF images without loading them whole."""

from __future__ import annotations

import os
from pathlib import Path

import tifffile


def open_tiff(path: str | os.PathLike):
    """Open a TIFF for tile-wise reading.

    Uncompressed, contiguous images are memory-mapped; others are read into memory (the
    big-image path streams them through tifffile's zarr store).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable TIFF.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    try:
        return tifffile.memmap(path, mode="r")
    except (ValueError, tifffile.TiffFileError, OSError):
        pass
    try:
        return tifffile.imread(path)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as err:
        raise ValueError(f"{path} is not a readable TIFF file ({err})") from None
