"""Streamed output on disk: a tiled, compressed BigTIFF or a zarr store, published atomically.

Results are written tile by tile into a temporary zarr array in a hidden folder beside the
destination. When the block that fills it succeeds, a ``.zarr`` destination is that array
renamed into place; a ``.tif``/``.tiff`` destination is streamed from it, one row of tiles at a
time, into a tiled zlib-compressed BigTIFF in the same hidden folder, which is then renamed.
Several outputs of one input (labels and probabilities) are published together or not at all.
On any error, cancel or KeyboardInterrupt the temporary data are removed, so a file under the
final name is always complete (which is what resumable batch runs rely on). An existing
``.zarr`` folder is replaced only if this package wrote it (its ``written_by`` attribute).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_tiled_unet.errors import TiledUNetError, UserInputError
from napari_tiled_unet.io.atomic import (
    current_umask,
    make_temporary_dir,
    publish_all,
    remove_temporary,
    remove_unfinished,
    uninterrupted,
)
from napari_tiled_unet.tiling.grid import BlockGrid

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIXES = (".zarr",)
#: The attribute that marks a zarr store as an output of this package (``written_by``).
OWNER = "napari-tiled-unet"
# What an output zarr (v3) array store holds: its metadata and its chunk folder.
_STORE_ENTRIES = {"zarr.json", "c"}

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


def _write_error(
    specs: Sequence[OutputSpec], err: OSError, existed: Sequence[bool]
) -> OutputWriteError:
    """One line naming every output of the failed write and what became of each."""
    reason = _WRITE_ERRORS.get(err.errno, "writing failed")
    detail = f"[Errno {err.errno}] {err.strerror}" if err.errno and err.strerror else str(err)
    kept = getattr(err, "kept", {})  # older outputs publish_all could not put back
    states = []
    for spec, was in zip(specs, existed, strict=True):
        path = spec.path
        if spec.destination in kept:
            states.append(
                f"the older {path} could not be put back and is now {kept[spec.destination]}"
            )
        elif was:
            states.append(f"{path} was left as it was")
        else:
            states.append(f"nothing was written under {path}")
    names = " and ".join(str(spec.path) for spec in specs)
    new = OutputWriteError(f"cannot write {names}: {reason} ({detail}); {'; '.join(states)}")
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


def replaceable_store(path: str | os.PathLike) -> bool:
    """Whether the folder ``path`` may be replaced by a new zarr output: it is empty, or a zarr
    array store this package wrote (its ``written_by`` attribute) holding nothing else."""
    try:
        entries = set(os.listdir(path))
    except OSError:
        return False
    if not entries:
        return True
    if not entries <= _STORE_ENTRIES:
        return False
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    attributes = meta.get("attributes") if isinstance(meta, dict) else None
    return (
        meta.get("node_type") == "array"
        and isinstance(attributes, dict)
        and attributes.get("written_by") == OWNER
    )


def check_output_path(path: str | os.PathLike) -> Path:
    """Raise a clear error now if ``path`` cannot become an output later; return it as a Path.

    An existing ``.zarr`` folder is only replaced if :func:`replaceable_store` says so: a
    folder this package did not write is never deleted.
    """
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
    if fmt == "zarr" and path.is_dir() and not replaceable_store(path):
        raise UserInputError(
            f"output {path} is a folder that napari-tiled-unet did not write (not one of its "
            f"zarr outputs); it was left as it is: choose another name, such as "
            f"{path.with_name(path.stem + '-labels.zarr')}"
        )
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


@dataclass(frozen=True)
class OutputSpec:
    """One output of :func:`create_outputs`.

    Parameters
    ----------
    path : path-like
        Destination; ``.tif``/``.tiff`` gives a tiled zlib-compressed BigTIFF, ``.zarr`` a
        zarr (v3) array store.
    shape : sequence of int
        Array shape, spatial axes last (e.g. ``(Y, X)`` or ``(C, Y, X)``).
    dtype : numpy dtype
        Element type.
    axes : str, optional
        Axis letters (e.g. ``"CYX"``), stored in the TIFF metadata / zarr attributes.
    tile : int
        TIFF tile and zarr chunk edge along Y and X, in pixels (multiple of 16).
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str | None = None
    tile: int = 256

    def __post_init__(self) -> None:
        path = check_output_path(self.path)
        if self.tile % 16:
            raise UserInputError(f"tile must be a multiple of 16, got {self.tile}")
        shape = tuple(int(n) for n in self.shape)
        if len(shape) < 2:
            raise UserInputError(f"output must have at least 2 axes (Y, X), got shape {shape}")
        if self.axes is not None and len(self.axes) != len(shape):
            raise UserInputError(f"axes {self.axes!r} do not match shape {shape}")
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def destination(self) -> Path:
        """``path`` with its folder resolved: a relative path keeps its meaning even if the
        working folder moves while the output is written."""
        return Path(os.path.realpath(self.path.parent)) / self.path.name


def _make_temporaries(specs: Sequence[OutputSpec], existed: Sequence[bool]) -> list[Path]:
    tmpdirs: list[Path] = []
    for spec in specs:
        try:
            tmpdirs.append(make_temporary_dir(spec.destination.parent, spec.path.name))
        except OSError as err:
            for tmp in tmpdirs:
                remove_temporary(tmp)
            if err.errno in _WRITE_ERRORS:
                raise _write_error(specs, err, existed) from None
            raise PermissionError(f"cannot write to {spec.path.parent}: {err.strerror}") from None
    return tmpdirs


def _finish(spec: OutputSpec, tmpdir: Path, array) -> Path:
    """The finished temporary to rename onto ``spec``'s destination."""
    if output_format(spec.path) == "zarr":
        os.chmod(tmpdir, 0o777 & ~current_umask())  # mkdtemp makes 0700
        return tmpdir
    import tifffile

    tiff = tmpdir / "data.tif"
    tifffile.imwrite(
        tiff,
        iter_tiff_tiles(array, spec.tile),
        shape=spec.shape,
        dtype=spec.dtype,
        tile=(spec.tile, spec.tile),
        compression="zlib",
        bigtiff=True,
        # Grey planes, never RGB: a 3-class probability map (3, Y, X) would otherwise be
        # tagged as colour, and other viewers would show classes as colours.
        photometric="minisblack",
        **tiff_axes_metadata(spec.axes),
    )
    return tiff


def tiff_axes_metadata(axes: str | None) -> dict:
    """``tifffile.imwrite`` keywords that record ``axes`` where other programs read them.

    OME-XML for axes OME can name (T, Z, C, Y, X, each at most once, Y and X last: Fiji,
    QuPath and napari's readers then show a class axis ``C``, not RGB); tifffile's own
    shaped metadata otherwise.
    """
    if not axes:
        return {"metadata": {}}
    if axes.endswith("YX") and set(axes) <= set("TZCYX") and len(set(axes)) == len(axes):
        return {"ome": True, "metadata": {"axes": axes}}
    return {"metadata": {"axes": axes}}


@contextlib.contextmanager
def create_outputs(specs: Sequence[OutputSpec]) -> Iterator[list]:
    """Yield on-disk arrays to fill; publish them all only if the block succeeds.

    The outputs of one input (e.g. labels and probabilities) appear together or not at all:
    when one cannot be written, none is published and older files under their names stay
    as they were.

    Yields
    ------
    list of zarr.Array
        One temporary array per spec, of its shape and dtype, filled with 0.

    Raises
    ------
    UserInputError (a ValueError), FileNotFoundError, PermissionError, IsADirectoryError
        Before the block runs, if a path cannot be written (see :func:`check_output_path`)
        or two specs name the same file.
    OutputWriteError
        If writing fails (disk full, file too large, ...), after removing the temporary data:
        a one-line message naming the outputs and what became of each.
    """
    import zarr

    specs = list(specs)
    destinations = [spec.destination for spec in specs]
    if len(set(destinations)) < len(destinations):
        raise UserInputError(f"two outputs name the same file: {[str(s.path) for s in specs]}")
    existed = [os.path.lexists(path) for path in destinations]
    publishing = done = False
    tmpdirs = _make_temporaries(specs, existed)
    try:
        try:
            arrays = []
            for spec, tmpdir in zip(specs, tmpdirs, strict=True):
                zarr_out = output_format(spec.path) == "zarr"
                attributes = {"written_by": OWNER, **({"axes": spec.axes} if spec.axes else {})}
                arrays.append(
                    zarr.create_array(
                        store=str(tmpdir if zarr_out else tmpdir / "data.zarr"),
                        shape=spec.shape,
                        dtype=spec.dtype,
                        chunks=_chunks(spec.shape, spec.tile),
                        fill_value=0,
                        attributes=attributes,
                        overwrite=True,
                    )
                )
            yield arrays
            publishing = True
            finished = [
                _finish(spec, tmp, array)
                for spec, tmp, array in zip(specs, tmpdirs, arrays, strict=True)
            ]
            publish_all(list(zip(finished, destinations, strict=True)))
            done = True
        finally:
            with uninterrupted():
                if not done:
                    _wait_for_pending_writes()
                for tmpdir in tmpdirs:
                    remove_temporary(tmpdir)
    except OutputWriteError:
        raise
    except OSError as err:
        # Inside the block only write-only errors (disk full, file too large) are ours; the
        # block may also fail reading its input. Publishing only writes.
        if publishing or err.errno in _WRITE_ERRORS:
            raise _write_error(specs, err, existed) from err
        raise


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
    path, shape, dtype, axes, tile
        As for :class:`OutputSpec`. An existing output at ``path`` is replaced only on
        success (a ``.zarr`` folder only if this package wrote it).

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
    spec = OutputSpec(Path(path), shape, dtype, axes=axes, tile=tile)
    with create_outputs([spec]) as (array,):
        yield array


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
    return write_arrays([(path, array, axes)])[0]


def write_arrays(items: Sequence[tuple[str | os.PathLike, object, str | None]]) -> list[Path]:
    """Write in-memory arrays ``(path, array, axes)``, all published together or none."""
    arrays = [np.asarray(array) for _path, array, _axes in items]
    specs = [
        OutputSpec(Path(path), array.shape, array.dtype, axes=axes)
        for (path, _array, axes), array in zip(items, arrays, strict=True)
    ]
    with create_outputs(specs) as outs:
        for out, array in zip(outs, arrays, strict=True):
            out[...] = array
    return [Path(path) for path, _array, _axes in items]


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
    tmpdir = make_temporary_dir(tempfile.gettempdir() if directory is None else directory, prefix)
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
        with uninterrupted():
            if not done:
                _wait_for_pending_writes()
            remove_temporary(tmpdir)


def remove_unfinished_outputs() -> list[Path]:
    """After an interruption: let zarr's writes in flight end, then remove every temporary
    output folder or file of this process still there; return those that could not be."""
    if "zarr" in sys.modules:
        _wait_for_pending_writes()
    return remove_unfinished()
