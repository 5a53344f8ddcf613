"""Tile plans: where each tile is read (with context) and which part of its output is written.

A plan is computed before any work runs, so its length is known for exact progress. Tile origins
stay on the network's grid (``2**depth`` pixels, measured from the start of the mirror-padded
image the whole-image reference would see), which is what makes the stitched result equal to a
whole-image prediction.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.model.geometry import TileGeometry, UNetGeometry, axis_geometries

#: Geometry of a network for :func:`plan_tiles`: one TileGeometry for every axis, one per axis,
#: or a :class:`~napari_tiled_unet.model.geometry.UNetGeometry` (its per-axis geometries).
GeometryLike = TileGeometry | UNetGeometry | Sequence[TileGeometry]

#: Largest default network input tile edge (pixels) per number of spatial axes; the engine
#: shrinks it to spread the work evenly (:func:`plan_tiles`), and the inference engine to fit a
#: memory budget (:func:`default_tile_shape`'s ``max_voxels``). 2D: chosen from
#: benchmarks/predict_throughput.py on an 8192 px image — with the exact 107 px halo of a
#: depth-4 'same' network, 736 px tiles ran at 0.75 Mpx/s, 976 px at 0.82, 1248 px at 0.96 and
#: 1408 px at 0.97. 3D: a 256³ tile already holds 16.7 M voxels. Where the context differs
#: between axes (anisotropic 3D networks need less along Z), :func:`default_tile_shape` shares
#: the voxels out in proportion to each axis's context.
DEFAULT_TILE_EDGE = {2: 1280, 3: 256}


@dataclass(frozen=True)
class Tile:
    """One tile of a plan.

    Attributes
    ----------
    index : int
        Position in the plan.
    read_start : tuple of int
        Image coordinates of the first input pixel; may be negative or the window may run past
        the image end, where the image is mirror-padded.
    read_shape : tuple of int
        Network input shape (spatial).
    write : tuple of slice
        Region of the output image (image coordinates) this tile fills.
    crop : tuple of slice
        The same region in the coordinates of the network output for this tile.
    """

    index: int
    read_start: tuple[int, ...]
    read_shape: tuple[int, ...]
    write: tuple[slice, ...]
    crop: tuple[slice, ...]


@dataclass(frozen=True)
class _AxisSteps:
    """One axis of a plan: tile origins ``0, stride, 2 * stride, ...`` below ``size``."""

    size: int
    stride: int
    context_before: int
    crop_start: int

    @property
    def count(self) -> int:
        return -(-self.size // self.stride)


@dataclass(frozen=True)
class TileSequence(Sequence[Tile]):
    """The tiles of a plan, made on demand: a plan of millions of tiles costs no memory.

    Behaves like a tuple of :class:`Tile` (``len``, iteration, indexing, slicing, which
    returns a tuple), in C order over the axes (the last axis varies fastest).
    """

    steps: tuple[_AxisSteps, ...]
    tile_shape: tuple[int, ...]

    def __len__(self) -> int:
        return math.prod(step.count for step in self.steps)

    def _tile(self, index: int) -> Tile:
        read_start, write, crop = [], [], []
        rest = index
        for step in reversed(self.steps):
            rest, k = divmod(rest, step.count)
            origin = k * step.stride
            width = min(step.stride, step.size - origin)
            read_start.append(origin - step.context_before)
            write.append(slice(origin, origin + width))
            crop.append(slice(step.crop_start, step.crop_start + width))
        return Tile(
            index,
            tuple(reversed(read_start)),
            self.tile_shape,
            tuple(reversed(write)),
            tuple(reversed(crop)),
        )

    @overload
    def __getitem__(self, i: int) -> Tile: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[Tile, ...]: ...

    def __getitem__(self, i):
        n = len(self)
        if isinstance(i, slice):
            return tuple(self._tile(k) for k in range(*i.indices(n)))
        i = operator.index(i)
        if not -n <= i < n:
            raise IndexError(f"tile index {i} out of range for a plan of {n} tiles")
        return self._tile(i % n)

    def __iter__(self) -> Iterator[Tile]:
        return (self._tile(k) for k in range(len(self)))


@dataclass(frozen=True)
class TilePlan:
    """An ordered, immutable sequence of tiles covering an image exactly once.

    ``tiles`` is a :class:`TileSequence`: its tiles are computed when asked for, so planning
    takes constant time and memory however large the image (``len(plan)`` stays exact).
    """

    image_shape: tuple[int, ...]
    tile_shape: tuple[int, ...]
    stride: tuple[int, ...]
    tiles: TileSequence

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    def __getitem__(self, i: int) -> Tile:
        return self.tiles[i]


def _axis_stride(geometry: TileGeometry, size: int) -> int:
    out = geometry.output_size(size)
    usable = 0 if out is None else size - geometry.context_before - geometry.context_after
    return (usable // geometry.grid) * geometry.grid


def smallest_tile(geometry: TileGeometry, covered: int) -> int:
    """Smallest accepted tile edge whose written part covers ``covered`` pixels."""
    edge = geometry.nearest_valid_sizes(covered + geometry.context_before + geometry.context_after)[
        1
    ]
    while _axis_stride(geometry, edge) < covered:
        edge = geometry.nearest_valid_sizes(edge + 1)[1]
    return edge


def default_tile_shape(
    geometry: GeometryLike, ndim: int, max_voxels: int | None = None
) -> tuple[int, ...]:
    """The default network input tile: about ``DEFAULT_TILE_EDGE[ndim]**ndim`` pixels or fewer.

    Where all axes need the same context the tile is a square / cube. Otherwise (anisotropic
    3D networks) each edge is made proportional to its axis's context (``context_before +
    context_after``), for the same number of voxels: for a given tile volume that keeps the
    largest share of it as output. A depth-4 'same' network with two anisotropic levels (Z
    context 64, Y/X 224) gets 112 x 400 x 400 instead of 256³.

    Parameters
    ----------
    geometry : TileGeometry, sequence of TileGeometry, or UNetGeometry
        As for :func:`plan_tiles`.
    ndim : int
        Number of spatial axes.
    max_voxels : int, optional
        At most this many input voxels (a memory budget, see
        :func:`napari_tiled_unet.model.memory.voxel_budget`): where it binds, edges are
        rounded down to sizes the network accepts, otherwise up. Never below the smallest
        tile that leaves output, so an exact plan stays possible: that tile may hold more.
    """
    axes = axis_geometries(geometry, ndim)
    voxels = DEFAULT_TILE_EDGE[ndim] ** ndim
    fits_budget = max_voxels is None or voxels <= max_voxels
    if not fits_budget:
        voxels = max_voxels
    contexts = [g.context_before + g.context_after for g in axes]
    if len(set(contexts)) == 1 or min(contexts) == 0:
        weights = [1.0] * ndim
    else:
        mean = math.prod(contexts) ** (1 / ndim)
        weights = [c / mean for c in contexts]
    side = voxels ** (1 / ndim)
    edges = []
    for g, w in zip(axes, weights, strict=True):
        if fits_budget:
            edge = g.nearest_valid_sizes(max(round(side * w), 1))[1]
        else:
            edge = g.nearest_valid_sizes(max(math.floor(side * w), 1))[0] or 0
        edges.append(max(edge, smallest_tile(g, g.grid)))
    return tuple(edges)


def plan_tiles(
    image_shape: Sequence[int],
    geometry: GeometryLike,
    tile_shape: Sequence[int] | None = None,
) -> TilePlan:
    """Plan overlap tiles for an image.

    Parameters
    ----------
    image_shape : sequence of int
        Spatial shape of the image, e.g. ``(Y, X)`` or ``(Z, Y, X)``.
    geometry : TileGeometry, sequence of TileGeometry, or UNetGeometry
        Grid, context and sizes accepted by the network: one TileGeometry for every axis, or
        one per axis (a :class:`~napari_tiled_unet.model.geometry.UNetGeometry` gives its
        :attr:`~napari_tiled_unet.model.geometry.UNetGeometry.axes`).
    tile_shape : sequence of int, optional
        Largest network input tile shape (pixels, with context). Defaults to
        :func:`default_tile_shape`. Along each axis the plan uses as few tiles as this size
        allows, each shrunk to the smallest accepted size for which that many tiles cover the
        image: a 3240 px axis with 1024 px tiles of a depth-4 'same' network gets five 880 px
        tiles rather than five 1024 px tiles, the last of which would write 40 px.

    Returns
    -------
    TilePlan

    Raises
    ------
    UserInputError
        (a ValueError) if a tile size is not accepted by the network, or leaves no room for
        output after the context is removed; the message names sizes that work.
    """
    image_shape = tuple(int(n) for n in image_shape)
    ndim = len(image_shape)
    if any(n < 1 for n in image_shape):
        raise UserInputError(f"cannot tile an empty image of shape {image_shape}")
    axes = axis_geometries(geometry, ndim)
    if tile_shape is None:
        tile_shape = default_tile_shape(axes, ndim)
    tile_shape = tuple(int(n) for n in tile_shape)
    if len(tile_shape) != ndim:
        raise UserInputError(
            f"tile_shape {tile_shape} must have one entry per image axis {image_shape}"
        )
    names = "ZYX"[-ndim:] if ndim <= 3 else [str(i) for i in range(ndim)]

    shape, strides = [], []
    for n, edge, axis, geometry in zip(image_shape, tile_shape, names, axes, strict=True):
        geometry.check_size(edge, axis)
        stride = _axis_stride(geometry, edge)
        if stride < geometry.grid:
            minimum = smallest_tile(geometry, geometry.grid)
            raise UserInputError(
                f"tile size {edge} along axis {axis} leaves no output after removing the "
                f"{geometry.context_before}+{geometry.context_after} px context this network "
                f"needs; use at least {minimum}"
            )
        # As few tiles as this edge allows, each shrunk to the smallest that still covers the
        # axis, so the work is spread evenly instead of a last tile that writes a sliver.
        count = math.ceil(n / stride)
        covered = math.ceil(n / count / geometry.grid) * geometry.grid
        edge = smallest_tile(geometry, covered)
        stride = _axis_stride(geometry, edge)
        shape.append(edge)
        strides.append(stride)

    steps = tuple(
        _AxisSteps(n, s, g.context_before, g.context_before - g.output_offset)
        for n, s, g in zip(image_shape, strides, axes, strict=True)
    )
    return TilePlan(image_shape, tuple(shape), tuple(strides), TileSequence(steps, tuple(shape)))
