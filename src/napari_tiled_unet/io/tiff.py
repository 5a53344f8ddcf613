"""Reading TIFF images without loading them whole, and refusing headers that cannot be true.

A TIFF header is checked before anything is planned or decoded: the image it claims must fit
the file (:data:`MAX_INFLATION`, :data:`MAX_IMAGE_BYTES`), its strips or tiles must be listed
and sized consistently, and no compressed strip or tile may decode to more than
:data:`MAX_SEGMENT_BYTES`. Whatever tifffile raises on a damaged file, and every decoding error
later, becomes one :class:`~napari_tiled_unet.errors.UserInputError` that names the file.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import tifffile
from tifffile.zarr import ZarrTiffStore

from napari_tiled_unet.errors import UserInputError

#: The most bytes of pixels a header may claim per byte of file. zlib inflates at most ~1032x
#: and LZW about as much; 10000x leaves room for better codecs (zstd) and sparse tiles, while
#: a 21 KB file claiming 4,294,967,295 rows (896 GiB) or a 2.4 MB one claiming 200000² pixels
#: (37 GiB) is refused. Images of up to :data:`SMALL_IMAGE_BYTES` are exempt.
MAX_INFLATION = 10_000
#: Decoded size below which the inflation bound does not apply (such an image is harmless).
SMALL_IMAGE_BYTES = 64 * 2**20
#: The largest image (decoded bytes, one pyramid level) opened at all: 16 TiB.
MAX_IMAGE_BYTES = 2**44
#: The largest compressed strip or tile: every tile the engine reads decodes each strip or
#: tile it touches, whole, so a single-strip zlib image of 800 MB would be inflated in full for
#: every tile (and a 778 KB file can hold one).
MAX_SEGMENT_BYTES = 256 * 2**20

_NOT_READABLE = "is not a readable TIFF file"


def _first_line(err: BaseException) -> str:
    """``"Type: first line of the message"``; ``struct.error``/``zlib.error`` keep their module."""
    name = type(err).__name__
    if name == "error":
        name = f"{type(err).__module__}.error"
    text = str(err).strip()
    return f"{name}: {text.splitlines()[0] if text else 'no detail'}"


def _fmt_bytes(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _check_path(path: Path) -> int:
    """The size of the regular file at ``path``; a FIFO, device or folder is refused unopened."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"input file not found: {path}") from None
    except OSError as err:  # a symlink loop, a permission problem
        raise UserInputError(f"cannot read {path}: {err.strerror or err}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserInputError(f"{path} is a folder, not a TIFF file")
    if not stat.S_ISREG(info.st_mode):
        raise UserInputError(
            f"{path} is not a regular file (a FIFO, socket or device); give a TIFF file"
        )
    return info.st_size


@contextlib.contextmanager
def _tiff(path: Path) -> Iterator[tifffile.TiffFile]:
    """``tifffile.TiffFile`` at ``path``; a damaged file's error becomes one UserInputError.

    tifffile raises many types on hostile headers (struct.error for a 2-byte file,
    ZeroDivisionError for ImageWidth 0, RuntimeError, KeyError, IndexError, ...).
    """
    _check_path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            yield tif
    except UserInputError:
        raise
    except MemoryError:
        raise UserInputError(f"{path} {_NOT_READABLE}: its header lists absurd sizes") from None
    except Exception as err:  # any parsing failure of a foreign file
        raise UserInputError(
            f"{path} {_NOT_READABLE}: its header is damaged, or it is no TIFF ({_first_line(err)})"
        ) from None


def _series_level(tif: tifffile.TiffFile, path: Path, level: int):
    if not tif.series:
        raise UserInputError(f"{path} {_NOT_READABLE}: it holds no image")
    levels = tif.series[0].levels
    if not 0 <= level < len(levels):
        raise UserInputError(
            f"{path}: pyramid level {level} requested; it has levels 0..{len(levels) - 1}"
        )
    return levels[level]


def tiff_levels(path: str | os.PathLike) -> int:
    """Number of pyramid levels of the first image series in the TIFF at ``path`` (1 if none)."""
    with _tiff(Path(path)) as tif:
        _series_level(tif, Path(path), 0)
        return len(tif.series[0].levels)


def tiff_axes(path: str | os.PathLike, level: int = 0) -> str:
    """Axis letters of the first image series at ``path`` as tifffile names them, e.g. ``"ZYX"``.

    ``S`` is colour samples (RGB), ``Q`` an axis of unknown meaning.
    """
    with _tiff(Path(path)) as tif:
        return _series_level(tif, Path(path), level).axes


def _check_sizes(series, path: Path, file_size: int) -> None:
    """Refuse a header whose image is empty, absurdly large for the file, or cut short."""
    shape, dtype = tuple(series.shape), series.dtype
    if dtype is None:
        key = series.keyframe
        raise UserInputError(
            f"{path}: its pixel type is not supported (SampleFormat {key.sampleformat}, "
            f"{key.bitspersample}-bit); save the image with 8-, 16- or 32-bit samples"
        )
    if not shape or min(shape) < 1:
        raise UserInputError(f"{path}: its header gives an empty image of shape {shape}")
    claimed = math.prod(shape) * dtype.itemsize
    described = f"an image of shape {shape} {dtype} ({_fmt_bytes(claimed)})"
    if claimed > MAX_IMAGE_BYTES:
        raise UserInputError(
            f"{path}: its header claims {described}, more than the {_fmt_bytes(MAX_IMAGE_BYTES)} "
            "this program opens; the header is damaged"
        )
    if claimed > max(SMALL_IMAGE_BYTES, MAX_INFLATION * file_size):
        raise UserInputError(
            f"{path}: its header claims {described} in a file of {_fmt_bytes(file_size)}, "
            f"more than {MAX_INFLATION} times the file size; the header is damaged"
        )
    ends = [
        o + n
        for page in series.pages
        if page is not None
        for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)
    ]
    if series.dataoffset is not None:
        ends.append(series.dataoffset + claimed)
    if ends and max(ends) > file_size:
        raise UserInputError(
            f"{path} is truncated: its image data end at byte {max(ends)}, the file has "
            f"{file_size} bytes"
        )


def _check_segments(series, path: Path) -> None:
    """For data read strip by strip or tile by tile: consistent, decodable, no bombs."""
    key = series.keyframe
    what = "tile" if key.is_tiled else "strip"
    if key.samplesperpixel < 1 or 0 in key.chunks:
        raise UserInputError(
            f"{path}: its header gives {what}s of shape {key.chunks} with "
            f"{key.samplesperpixel} sample(s) per pixel (a RowsPerStrip, TileWidth, "
            "TileLength or SamplesPerPixel of 0); the file is damaged"
        )
    listed, needed = len(key.dataoffsets), math.prod(key.chunked)
    if listed != needed:
        raise UserInputError(
            f"{path}: its header lists {listed} {what}(s) where its image size needs "
            f"{needed}; the file is damaged"
        )
    segment = math.prod(key.chunks) * series.dtype.itemsize
    if key.compression != 1 and segment > MAX_SEGMENT_BYTES:
        raise UserInputError(
            f"{path}: each compressed {what} decodes to {_fmt_bytes(segment)} (at most "
            f"{_fmt_bytes(MAX_SEGMENT_BYTES)} are read at once), and every tile read would "
            "decode one whole; save the image tiled, e.g. tifffile.imwrite(out, "
            "tifffile.imread(path), tile=(512, 512), compression='zlib')"
        )


class _NamedErrorStore(ZarrTiffStore):
    """tifffile's zarr store; a strip or tile that fails to decode raises a UserInputError
    naming the file (zlib.error, imagecodecs needed for packed 12-bit integers, ...)."""

    path: Path = Path()

    async def get(self, key, prototype, byte_range=None):
        try:
            return await super().get(key, prototype, byte_range)
        except Exception as err:  # any decoding failure of a damaged file
            raise UserInputError(_decode_message(self.path, key, err)) from None


def _decode_message(path: Path, key: str, err: BaseException) -> str:
    if "imagecodecs" in str(err):
        return (
            f"{path} cannot be decoded without the imagecodecs package ({_first_line(err)}); "
            "install it (pip install imagecodecs) or save the image uncompressed or "
            "zlib-compressed with 8-, 16- or 32-bit samples"
        )
    return f"{path} is damaged: its data chunk {key} cannot be decoded ({_first_line(err)})"


def open_tiff(path: str | os.PathLike, level: int = 0):
    """Open a TIFF for tile-wise reading, without reading its pixels.

    Uncompressed, contiguous images come back as a read-only ``numpy.memmap``; tiled,
    compressed, BigTIFF, OME-TIFF and pyramidal files as a read-only ``zarr.Array`` over
    tifffile's zarr store, which decodes only the tiles or strips a slice touches. The header
    is checked first (see the module docstring) and, for the zarr path, the first strip or tile
    is decoded, so an unsupported compression or bit depth fails here.

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
    UserInputError
        (a ValueError) If the path is not a regular file, not a readable TIFF, is truncated,
        claims an image its size cannot hold, has no such level, or cannot be decoded. Reading
        from the returned zarr array raises it too, for a strip or tile that cannot be decoded.
    """
    path = Path(path)
    file_size = _check_path(path)
    with _tiff(path) as tif:
        series = _series_level(tif, path, level)
        _check_sizes(series, path, file_size)
        mappable = series.dataoffset is not None
        if not mappable:
            _check_segments(series, path)
            store = _NamedErrorStore(tif.series[0], level=level)
            store.path = path
    if mappable:
        try:
            return tifffile.memmap(path, mode="r", series=0, level=level)
        except Exception as err:  # checked above; a race or an odd file
            raise UserInputError(f"{path} {_NOT_READABLE} ({_first_line(err)})") from None
    import zarr

    try:
        array = zarr.open_array(store, mode="r")
    except Exception as err:  # zarr rejecting the store's metadata
        raise UserInputError(f"{path} {_NOT_READABLE} ({_first_line(err)})") from None
    array[(0,) * array.ndim]  # decodes the first strip or tile: fails now, not mid-job
    return array
