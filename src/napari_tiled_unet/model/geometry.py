"""Sizes a U-Net accepts, the size it returns, and the context (halo) a tile needs.

Everything here is per spatial axis and purely arithmetic: no torch. A :class:`UNetGeometry`
holds one :class:`UNetAxisGeometry` per spatial axis; they are all equal except for 3D networks
with ``anisotropic_levels``, whose first levels neither pool nor up-sample along Z.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass

from napari_tiled_unet.config import UNetConfig
from napari_tiled_unet.errors import UserInputError


@dataclass(frozen=True)
class TileGeometry:
    """What the tiling engine must know about a network, per spatial axis.

    Parameters
    ----------
    grid : int
        Tile origins must lie on multiples of this many pixels (``2**depth`` for a U-Net): the
        network is only shift-equivariant for such shifts.
    context_before, context_after : int
        Input pixels needed before and after an output pixel so that its value does not depend
        on how the image was cut into tiles.
    output_offset : int
        Input index of output pixel 0 ('valid' networks return a smaller map).
    shrink : int
        Input size minus output size (0 for 'same' padding).
    """

    grid: int = 1
    context_before: int = 0
    context_after: int = 0
    output_offset: int = 0
    shrink: int = 0

    def output_size(self, size: int) -> int | None:
        """Output length for an input length, or None if the network rejects that length."""
        out = size - self.shrink
        return out if size % self.grid == 0 and out > 0 else None

    def nearest_valid_sizes(self, size: int) -> tuple[int | None, int]:
        """The largest accepted input length <= ``size`` (None if none) and the smallest >= it."""
        lower = next((n for n in range(size, 0, -1) if self.output_size(n)), None)
        upper = next(n for n in range(max(size, 1), 10**9) if self.output_size(n))
        return lower, upper

    def check_size(self, size: int, axis: str = "") -> int:
        """Return the output length for ``size`` or raise a ValueError naming the sizes that work."""
        out = self.output_size(size)
        if out is None:
            lower, upper = self.nearest_valid_sizes(size)
            options = f"{lower} or {upper}" if lower else f"{upper} or larger"
            where = f" along axis {axis}" if axis else ""
            raise UserInputError(
                f"input size {size}{where} does not suit this network; use {options}"
            )
        return out


@dataclass(frozen=True)
class UNetAxisGeometry(TileGeometry):
    """Geometry of a :class:`~napari_tiled_unet.model.unet.UNet` along one spatial axis.

    Build it with :meth:`build`. Along an axis a U-Net is a chain of double 3-wide
    convolutions with a 2x pooling (encoder) and a 2x up-sampling (decoder) at each level
    that pools along this axis; ``pools`` says which levels do.

    Parameters
    ----------
    grid, context_before, context_after, output_offset, shrink : int
        As for :class:`TileGeometry`.
    depth : int
        Number of levels (pooling steps of the network).
    padding : {"same", "valid"}
        Convolution padding.
    pools : tuple of bool
        Per level, from full resolution (level 0) down, whether it pools and up-samples along
        this axis. All True except along Z for the first ``anisotropic_levels`` levels.
    """

    depth: int = 4
    padding: str = "same"
    pools: tuple[bool, ...] = (True, True, True, True)

    @classmethod
    def build(
        cls, depth: int, padding: str = "same", pools: Sequence[bool] | None = None
    ) -> UNetAxisGeometry:
        """The geometry along an axis pooled at the levels ``pools`` (default: every level).

        The grid is ``2**sum(pools)``. 'valid': the context is what the network trims off.
        'same': the worst-case receptive field (:func:`_same_padding_field`, 107 px per side
        at depth 4) rounded up to a whole number of grid steps (112 px), the same on both
        sides. A tile then starts a whole number of grid steps before the pixels it writes,
        so every tile, and the image origin, sits at phase 0 of the pooling grid: the stitched
        result equals one forward pass over the image mirror-padded by that context, which is
        also what bioimage.io's blockwise prediction computes from a halo of that size.
        """
        pools = (True,) * depth if pools is None else tuple(bool(p) for p in pools)
        if len(pools) != depth:
            raise UserInputError(f"pools needs one entry per level ({depth}), got {len(pools)}")
        grid = 2 ** sum(pools)
        if padding == "valid":
            # A valid network never sees padding: the context is what it trims off.
            probe = cls(grid, depth=depth, padding=padding, pools=pools)
            size = probe.min_input_size
            halo = (size - probe.output_size(size)) // 2
            return cls(grid, halo, halo, halo, 2 * halo, depth, padding, pools)
        field = max(_same_padding_field(depth, pools))
        context = -(-field // grid) * grid
        return cls(grid, context, context, 0, 0, depth, padding, pools)

    @property
    def receptive_field(self) -> tuple[int, int]:
        """Input pixels (before, after) an output pixel can depend on, over all grid phases.

        For a 'same' network the context (:attr:`halo`) is this rounded up to the grid; for a
        'valid' one it is the context itself.
        """
        if self.padding == "valid":
            return UNetAxisGeometry.build(self.depth, self.padding, self.pools).halo
        return _same_padding_field(self.depth, self.pools)

    @property
    def halo(self) -> tuple[int, int]:
        """Context (before, after) a tile needs for an exact prediction."""
        return self.context_before, self.context_after

    def output_size(self, size: int) -> int | None:
        if self.padding == "same":
            return super().output_size(size)
        n = size
        for pooled in self.pools:
            n -= 4
            if n <= 0 or (pooled and n % 2):
                return None
            n = n // 2 if pooled else n
        n -= 4
        if n <= 0:
            return None
        for pooled in reversed(self.pools):
            n = (2 * n if pooled else n) - 4
            if n <= 0:
                return None
        return n

    @property
    def min_input_size(self) -> int:
        """The smallest input length the network accepts along this axis."""
        return self.nearest_valid_sizes(1)[1]


@dataclass(frozen=True)
class UNetGeometry:
    """Geometry of a :class:`~napari_tiled_unet.model.unet.UNet`: one geometry per spatial axis.

    Build it with :meth:`from_config`. Valid-padding networks accept only some input sizes
    (572 → 388 for depth 4); same-padding networks accept multiples of the grid (``2**depth``,
    along Z ``2**(depth - anisotropic_levels)``).

    Parameters
    ----------
    axes : tuple of UNetAxisGeometry
        Per spatial axis, in the order of the input (``(Y, X)`` or ``(Z, Y, X)``). Pass it (or
        the whole UNetGeometry) to :func:`~napari_tiled_unet.tiling.plan.plan_tiles`.
    depth : int
        Number of levels.
    padding : {"same", "valid"}
        Convolution padding.
    anisotropic_levels : int
        Leading levels that do not pool along Z (3D).

    Notes
    -----
    The :class:`TileGeometry` attributes and methods (``grid``, ``context_before``,
    ``context_after``, ``output_offset``, ``shrink``, ``halo``, ``output_size``,
    ``nearest_valid_sizes``, ``check_size``, ``min_input_size``) are those of every axis when
    all axes are alike (2D, isotropic 3D). For an anisotropic network they raise a ValueError:
    use :attr:`axes`.
    """

    axes: tuple[UNetAxisGeometry, ...]
    depth: int = 4
    padding: str = "same"
    anisotropic_levels: int = 0

    @classmethod
    def from_config(cls, config: UNetConfig) -> UNetGeometry:
        """The geometry of the network ``config`` describes (cached: configs are immutable)."""
        return _geometry_from_config(config)

    @property
    def ndim(self) -> int:
        return len(self.axes)

    def with_halo(self, halo: int | None) -> UNetGeometry:
        """This geometry with its context cut to about ``halo`` pixels per side (approximate).

        The exact halo of a 'same' network is its whole receptive field rounded up to the
        grid (112 px per side at depth 4), most of which barely matters; a smaller one lets much smaller tiles keep
        most of their output, at the price of small differences from the whole-image
        prediction near tile borders (see the README for measured ones). Along each axis the
        context is cut by whole grid steps, to the least of ``exact - k * grid`` that is
        ``>= halo``, so that tiles stay in the whole image's pooling phase.

        Parameters
        ----------
        halo : int or None
            Context per side, at least 0; None, or at least the exact halo: this geometry.

        Raises
        ------
        ValueError
            For a 'valid' network asked for less than its exact halo: it trims its context
            itself, so its tiles cannot read less.
        """
        if halo is None:
            return self
        given = halo
        try:
            halo = -1 if isinstance(halo, bool) else operator.index(halo)
        except TypeError:
            halo = -1
        if halo < 0:
            raise UserInputError(f"halo must be a non-negative integer or None, got {given!r}")
        if self.padding == "valid":
            exact = min(min(pair) for pair in self.halos)
            if halo < exact:
                raise UserInputError(
                    f"a 'valid' network trims its own context ({self.describe()}), so its "
                    f"halo cannot be cut to {halo}; leave halo unset"
                )
            return self
        axes = []
        for axis in self.axes:
            cut = max(0, (axis.context_before - halo) // axis.grid) * axis.grid
            axes.append(
                dataclasses.replace(
                    axis,
                    context_before=axis.context_before - cut,
                    context_after=max(0, axis.context_after - cut),
                )
            )
        return dataclasses.replace(self, axes=tuple(axes))

    @property
    def exact(self) -> bool:
        """Whether tiles get the whole receptive field (no :meth:`with_halo` cut)."""
        return all(
            axis == UNetAxisGeometry.build(axis.depth, axis.padding, axis.pools)
            for axis in self.axes
        )

    @property
    def axis_names(self) -> str:
        """Letters of the spatial axes, ``"YX"`` or ``"ZYX"``."""
        return "ZYX"[-self.ndim :]

    @property
    def halos(self) -> tuple[tuple[int, int], ...]:
        """Per axis, the context (before, after) a tile needs for an exact prediction."""
        return tuple(axis.halo for axis in self.axes)

    @property
    def receptive_fields(self) -> tuple[tuple[int, int], ...]:
        """Per axis, the input pixels (before, after) an output pixel can depend on; the
        context (:attr:`halos`) is this rounded up to the grid for 'same' networks."""
        return tuple(axis.receptive_field for axis in self.axes)

    @property
    def grids(self) -> tuple[int, ...]:
        """Per axis, the grid tile origins must lie on."""
        return tuple(axis.grid for axis in self.axes)

    @property
    def min_input_shape(self) -> tuple[int, ...]:
        """The smallest input shape the network accepts."""
        return tuple(axis.min_input_size for axis in self.axes)

    def check_input_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return the output spatial shape for an input spatial shape, or raise ValueError.

        The message names the axis ("Z", "Y" or "X") and the nearest sizes that work along it.
        """
        if len(shape) != self.ndim:
            raise UserInputError(f"expected {self.ndim} spatial axes, got shape {shape}")
        return tuple(
            axis.check_size(n, name)
            for n, axis, name in zip(shape, self.axes, self.axis_names, strict=True)
        )

    def describe(self) -> str:
        """One line per group of equal axes: grid and halo, e.g. for error messages."""
        groups: dict[UNetAxisGeometry, str] = {}
        for axis, name in zip(self.axes, self.axis_names, strict=True):
            groups[axis] = groups.get(axis, "") + name
        return "; ".join(
            f"{names}: grid {g.grid}, halo {g.context_before}+{g.context_after}"
            for g, names in groups.items()
        )

    # The single-axis interface, for networks whose axes are all alike.

    @property
    def isotropic(self) -> bool:
        """Whether every axis has the same geometry (always in 2D)."""
        return len(set(self.axes)) == 1

    def _common(self) -> UNetAxisGeometry:
        if not self.isotropic:
            raise UserInputError(
                f"this anisotropic network's geometry differs per axis ({self.describe()}); "
                "use geometry.axes[i] for axis i"
            )
        return self.axes[0]

    @property
    def grid(self) -> int:
        return self._common().grid

    @property
    def context_before(self) -> int:
        return self._common().context_before

    @property
    def context_after(self) -> int:
        return self._common().context_after

    @property
    def output_offset(self) -> int:
        return self._common().output_offset

    @property
    def shrink(self) -> int:
        return self._common().shrink

    @property
    def halo(self) -> tuple[int, int]:
        """Context (before, after) per side a tile needs for an exact prediction."""
        return self._common().halo

    @property
    def min_input_size(self) -> int:
        return self._common().min_input_size

    def output_size(self, size: int) -> int | None:
        """Output length for an input length (every axis alike), None if rejected."""
        return self._common().output_size(size)

    def nearest_valid_sizes(self, size: int) -> tuple[int | None, int]:
        """See :meth:`TileGeometry.nearest_valid_sizes` (every axis alike)."""
        return self._common().nearest_valid_sizes(size)

    def check_size(self, size: int, axis: str = "") -> int:
        """See :meth:`TileGeometry.check_size` (every axis alike)."""
        return self._common().check_size(size, axis)


@functools.lru_cache(maxsize=64)
def _geometry_from_config(config: UNetConfig) -> UNetGeometry:
    depth, padding, k = config.depth, config.padding, config.anisotropic_levels
    full = UNetAxisGeometry.build(depth, padding)
    axes = (full,) * config.ndim
    if k:
        z = UNetAxisGeometry.build(depth, padding, [level >= k for level in range(depth)])
        axes = (z, *axes[1:])
    return UNetGeometry(axes, depth, padding, k)


def axis_geometries(
    geometry: TileGeometry | UNetGeometry | Sequence[TileGeometry], ndim: int
) -> tuple[TileGeometry, ...]:
    """One :class:`TileGeometry` per axis of an ``ndim``-axis image.

    ``geometry`` is a TileGeometry (used for every axis), a :class:`UNetGeometry` (its
    :attr:`~UNetGeometry.axes`) or a sequence with one TileGeometry per axis.
    """
    if isinstance(geometry, TileGeometry):
        return (geometry,) * ndim
    axes = tuple(geometry.axes if isinstance(geometry, UNetGeometry) else geometry)
    if len(axes) != ndim or not all(isinstance(g, TileGeometry) for g in axes):
        raise UserInputError(
            f"expected one TileGeometry per image axis ({ndim}), got {len(axes)} "
            f"({', '.join(type(g).__name__ for g in axes)})"
        )
    return axes


@functools.lru_cache(maxsize=64)
def _same_padding_field(depth: int, pools: tuple[bool, ...] | None = None) -> tuple[int, int]:
    """Input pixels (before, after) an output pixel of a 'same' U-Net depends on, along one axis.

    Intervals of feature-map indices are traced back through the network; max pooling maps
    level-l+1 index j to level-l indices 2j and 2j+1, so the field is asymmetric by up to
    ``grid - 1`` pixels depending on where a pixel sits on the pooling grid. The worst case
    over all grid phases is returned.

    Parameters
    ----------
    depth : int
        Number of levels.
    pools : tuple of bool, optional
        Per level, whether it pools (and its decoder up-samples) along this axis; a level that
        does not maps index j to j both ways. Default: every level (grid ``2**depth``).
    """
    pools = (True,) * depth if pools is None else tuple(pools)

    def down(level: int, lo: int, hi: int) -> tuple[int, int]:
        """Indices of level ``level`` read by the pooling into level ``level + 1``."""
        return (2 * lo, 2 * hi + 1) if pools[level] else (lo, hi)

    def encoder(level: int, lo: int, hi: int) -> tuple[int, int]:
        lo, hi = lo - 2, hi + 2  # double 3-wide conv
        if level == 0:
            return lo, hi
        return encoder(level - 1, *down(level - 1, lo, hi))

    def decoder(level: int, lo: int, hi: int) -> tuple[int, int]:
        lo, hi = lo - 2, hi + 2  # double 3-wide conv
        if level == depth:  # bottleneck over pool(E_{depth-1})
            return encoder(depth - 1, *down(depth - 1, lo, hi))
        up = (lo // 2, hi // 2) if pools[level] else (lo, hi)  # 2-wide transposed conv
        up_lo, up_hi = decoder(level + 1, *up)
        skip_lo, skip_hi = encoder(level, lo, hi)
        return min(up_lo, skip_lo), max(up_hi, skip_hi)

    before = after = 0
    for phase in range(2 ** sum(pools)):
        lo, hi = decoder(0, phase, phase)
        before = max(before, phase - lo)
        after = max(after, hi - phase)
    return before, after
