"""Reading TIFF images without loading them whole, and writing TIFFs atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file is created at once, so an unwritable destination fails before any work.
    On any error (or KeyboardInterrupt) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"output {path} is a folder; give a file name such as {path / 'labels.tif'}"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise PermissionError(f"cannot write to {path.parent}: {err.strerror}") from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_tiff(path: str | os.PathLike, data: np.ndarray, *, axes: str | None = None) -> Path:
    """Write ``data`` as a zlib-compressed TIFF, atomically."""
    with atomic_path(path) as tmp:
        metadata = {"axes": axes} if axes else None
        tifffile.imwrite(tmp, np.asarray(data), compression="zlib", metadata=metadata)
    return Path(path)
