"""Streamed output on disk: a tiled, compressed BigTIFF or a zarr store, published atomically.

Results are written tile by tile into a temporary zarr array beside the destination. When the
block that fills it succeeds, a ``.zarr`` destination is that array renamed into place; a
``.tif``/``.tiff`` destination is streamed from it, one row of tiles at a time, into a tiled
zlib-compressed BigTIFF under a temporary name that is then renamed. On any error, cancel or
KeyboardInterrupt the temporary data are removed, so a file under the final name is always
complete (which is what resumable batch runs rely on).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from napari_tiled_unet.errors import TiledUNetError, UserInputError
from napari_tiled_unet.io.atomic import atomic_path, current_umask
from napari_tiled_unet.tiling.grid import BlockGrid

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIXES = (".zarr",)

# Errors that can only come from writing, with what they mean for the user.
_WRITE_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "a file would exceed the size limit (ulimit -f, or the file system's maximum)",
}


class OutputWriteError(TiledUNetError, OSError):
    """An output could not be written (e.g. disk full); nothing was left under its name.

    ``errno`` is that of the underlying error (``ENOSPC``, ``EFBIG``, ...); ``str()`` is a
    one-line message naming the output.
    """


def _write_error(path: Path, err: OSError, existed: bool) -> OutputWriteError:
    reason = _WRITE_ERRORS.get(err.errno, "writing failed")
    detail = f"[Errno {err.errno}] {err.strerror}" if err.errno and err.strerror else str(err)
    left = f"{path} was left as it was" if existed else f"nothing was written under {path}"
    new = OutputWriteError(f"cannot write {path}: {reason} ({detail}); {left}")
    new.errno = err.errno
    return new


def output_format(path: str | os.PathLike) -> str:
    """``"tiff"`` or ``"zarr"`` from the extension of ``path``; a UserInputError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in ZARR_SUFFIXES:
        return "zarr"
    raise UserInputError(f"output {path} must end in .tif, .tiff or .zarr")


def check_output_path(path: str | os.PathLike) -> Path:
    """Raise a clear error now if ``path`` cannot become an output later; return it as a Path."""
    path = Path(path)
    fmt = output_format(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")
    if fmt == "tiff" and path.is_dir():
        raise IsADirectoryError(
            f"output {path} is a folder; give a file name such as {path / 'labels.tif'}"
        )
    if fmt == "zarr" and path.exists() and not path.is_dir():
        raise FileExistsError(f"output {path} exists and is not a zarr folder; remove it first")
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"cannot write to {path.parent}: permission denied")
    return path


def _chunks(shape: Sequence[int], tile: int) -> tuple[int, ...]:
    """One chunk per TIFF tile: 1 along leading axes, ``tile`` (or less) along Y and X."""
    lead = (1,) * (len(shape) - 2)
    return (*lead, *(max(1, min(tile, n)) for n in shape[-2:]))


def iter_tiff_tiles(array, tile: int) -> Iterator[np.ndarray]:
    """Tiles of ``array`` (``(..., Y, X)``) in TIFF order: plane by plane, row-major tiles.

    Only one row of tiles of one plane is read at a time; edge tiles are smaller (tifffile
    pads them).
    """
    *lead, height, width = array.shape
    columns = BlockGrid((width,), (tile,))
    for rows in BlockGrid((*lead, height), (*(1,) * len(lead), tile)):  # one band at a time
        band = np.asarray(array[(*rows, slice(None))])
        band = band.reshape(band.shape[-2:])
        for x in columns:
            yield band[(slice(None), *x)]


def _wait_for_pending_writes(timeout: float = 60.0) -> None:
    """Let the chunk writes zarr still has in flight finish.

    zarr writes the chunks of one assignment concurrently; when one fails (disk full), the
    others go on in zarr's I/O thread and would recreate the temporary folder after it is
    removed. This waits (up to ``timeout`` seconds) for every task on zarr's event loop.
    """
    try:
        from zarr.core.sync import sync
    except ImportError:  # pragma: no cover - another zarr layout
        return

    async def drain():
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=timeout)

    with contextlib.suppress(Exception):
        sync(drain())


def _publish_dir(tmp: Path, path: Path) -> None:
    """Move the folder ``tmp`` onto ``path``, replacing an older folder there."""
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
    if not path.exists():
        os.replace(tmp, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, old / path.name)
    try:
        os.replace(tmp, path)
    except OSError:
        os.replace(old / path.name, path)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def create_output(
    path: str | os.PathLike,
    shape: Sequence[int],
    dtype,
    *,
    axes: str | None = None,
    tile: int = 256,
) -> Iterator:
    """Yield an on-disk array to fill; publish it at ``path`` only if the block succeeds.

    Parameters
    ----------
    path : path-like
        Destination; ``.tif``/``.tiff`` gives a tiled zlib-compressed BigTIFF, ``.zarr`` a
        zarr (v3) array store. An existing output there is replaced only on success.
    shape : sequence of int
        Array shape, spatial axes last (e.g. ``(Y, X)`` or ``(C, Y, X)``).
    dtype : numpy dtype
        Element type.
    axes : str, optional
        Axis letters (e.g. ``"CYX"``), stored in the TIFF metadata / zarr attributes.
    tile : int
        TIFF tile and zarr chunk edge along Y and X, in pixels (multiple of 16).

    Yields
    ------
    zarr.Array
        A temporary array of ``shape`` and ``dtype``, filled with 0, written chunk-wise.

    Raises
    ------
    UserInputError (a ValueError), FileNotFoundError, PermissionError, IsADirectoryError
        Before the block runs, if ``path`` cannot be written (see :func:`check_output_path`).
    OutputWriteError
        If writing fails (disk full, file too large, ...), after removing the temporary data:
        a one-line message naming ``path``; an older output there is left as it was.
    """
    import zarr

    path = check_output_path(path)
    fmt = output_format(path)
    if tile % 16:
        raise UserInputError(f"tile must be a multiple of 16, got {tile}")
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:
        raise UserInputError(f"output must have at least 2 axes (Y, X), got shape {shape}")
    if axes is not None and len(axes) != len(shape):
        raise UserInputError(f"axes {axes!r} do not match shape {shape}")
    dtype = np.dtype(dtype)
    existed = path.exists()
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as err:
        if err.errno in _WRITE_ERRORS:
            raise _write_error(path, err, existed) from None
        raise PermissionError(f"cannot write to {path.parent}: {err.strerror}") from None
    publishing = done = False
    try:
        try:
            with contextlib.ExitStack() as stack:
                tiff_tmp = stack.enter_context(atomic_path(path)) if fmt == "tiff" else None
                array = zarr.create_array(
                    store=str(tmpdir if fmt == "zarr" else tmpdir / "data.zarr"),
                    shape=shape,
                    dtype=dtype,
                    chunks=_chunks(shape, tile),
                    fill_value=0,
                    attributes={"axes": axes} if axes else None,
                    overwrite=True,
                )
                yield array
                publishing = True
                if fmt == "zarr":
                    _publish_dir(tmpdir, path)
                else:
                    import tifffile

                    tifffile.imwrite(
                        tiff_tmp,
                        iter_tiff_tiles(array, tile),
                        shape=shape,
                        dtype=dtype,
                        tile=(tile, tile),
                        compression="zlib",
                        bigtiff=True,
                        metadata={"axes": axes} if axes else {},
                    )
                done = True
        finally:
            if not done:
                _wait_for_pending_writes()
            shutil.rmtree(tmpdir, ignore_errors=True)
    except OutputWriteError:
        raise
    except OSError as err:
        # Inside the block only write-only errors (disk full, file too large) are ours; the
        # block may also fail reading its input. Publishing only writes.
        if publishing or err.errno in _WRITE_ERRORS:
            raise _write_error(path, err, existed) from err
        raise


def open_output(path: str | os.PathLike):
    """Open a finished output (TIFF or zarr) lazily, read-only."""
    path = Path(path)
    if output_format(path) == "zarr":
        import zarr

        return zarr.open_array(str(path), mode="r")
    from napari_tiled_unet.io.tiff import open_tiff

    return open_tiff(path)


def write_array(path: str | os.PathLike, array, *, axes: str | None = None) -> Path:
    """Write an in-memory ``array`` to ``path`` (TIFF or zarr, by extension), atomically."""
    array = np.asarray(array)
    with create_output(path, array.shape, array.dtype, axes=axes) as out:
        out[...] = array
    return Path(path)


@contextlib.contextmanager
def temporary_array(
    directory: str | os.PathLike | None,
    shape: Sequence[int],
    dtype,
    *,
    tile: int = 256,
    prefix: str = "scratch",
) -> Iterator:
    """Yield a scratch zarr array (filled with 0) in a new hidden folder inside ``directory``.

    For intermediate results larger than memory, such as the class map behind streamed
    instance labels. The folder (``.PREFIX.XXXXXXXX.tmp``; in the system's temporary folder
    when ``directory`` is None) is removed when the block ends, however it ends: error,
    cancel (``GeneratorExit``) or KeyboardInterrupt.
    """
    import zarr

    shape = tuple(int(n) for n in shape)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{prefix}.", suffix=".tmp", dir=directory))
    done = False
    try:
        yield zarr.create_array(
            store=str(tmpdir / "data.zarr"),
            shape=shape,
            dtype=np.dtype(dtype),
            chunks=_chunks(shape, tile) if len(shape) >= 2 else shape,
            fill_value=0,
        )
        done = True
    finally:
        if not done:
            _wait_for_pending_writes()
        shutil.rmtree(tmpdir, ignore_errors=True)
