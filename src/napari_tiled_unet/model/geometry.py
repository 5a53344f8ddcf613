"""Sizes a U-Net accepts, the size it returns, and the context (halo) a tile needs.

Everything here is per spatial axis and purely arithmetic: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from napari_tiled_unet.config import UNetConfig


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
            raise ValueError(f"input size {size}{where} does not suit this network; use {options}")
        return out


@dataclass(frozen=True)
class UNetGeometry(TileGeometry):
    """Geometry of a :class:`~napari_tiled_unet.model.unet.UNet`.

    Build it with :meth:`from_config`. Valid-padding networks accept only some input sizes
    (572 → 388 for depth 4); same-padding networks accept multiples of ``2**depth``.
    """

    depth: int = 4
    padding: str = "same"
    ndim: int = 2

    @classmethod
    def from_config(cls, config: UNetConfig) -> UNetGeometry:
        depth, padding, grid = config.depth, config.padding, 2**config.depth
        if padding == "valid":
            # A valid network never sees padding: the context is what it trims off.
            probe = cls(grid, depth=depth, padding=padding, ndim=config.ndim)
            size = probe.min_input_size
            halo = (size - probe.output_size(size)) // 2
            return cls(grid, halo, halo, halo, 2 * halo, depth, padding, config.ndim)
        before, after = _same_padding_field(depth)
        return cls(grid, before, after, 0, 0, depth, padding, config.ndim)

    @property
    def halo(self) -> tuple[int, int]:
        """Context (before, after) per side a tile needs for an exact prediction."""
        return self.context_before, self.context_after

    def output_size(self, size: int) -> int | None:
        if self.padding == "same":
            return super().output_size(size)
        n = size
        for _ in range(self.depth):
            n -= 4
            if n <= 0 or n % 2:
                return None
            n //= 2
        n -= 4
        if n <= 0:
            return None
        for _ in range(self.depth):
            n = 2 * n - 4
            if n <= 0:
                return None
        return n

    def check_input_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return the output spatial shape for an input spatial shape, or raise ValueError."""
        if len(shape) != self.ndim:
            raise ValueError(f"expected {self.ndim} spatial axes, got shape {shape}")
        names = "ZYX"[-self.ndim :]
        return tuple(self.check_size(n, axis) for n, axis in zip(shape, names, strict=True))

    @property
    def min_input_size(self) -> int:
        return self.nearest_valid_sizes(1)[1]


def _same_padding_field(depth: int) -> tuple[int, int]:
    """Input pixels (before, after) an output pixel of a 'same' U-Net depends on.

    Intervals of feature-map indices are traced back through the network; max pooling maps
    level-l+1 index j to level-l indices 2j and 2j+1, so the field is asymmetric by up to
    ``2**depth - 1`` pixels depending on where a pixel sits on the pooling grid. The worst case
    over all grid phases is returned.
    """

    def encoder(level: int, lo: int, hi: int) -> tuple[int, int]:
        lo, hi = lo - 2, hi + 2  # double 3x3 conv
        if level == 0:
            return lo, hi
        return encoder(level - 1, 2 * lo, 2 * hi + 1)  # through the 2x2 max pool

    def decoder(level: int, lo: int, hi: int) -> tuple[int, int]:
        lo, hi = lo - 2, hi + 2  # double 3x3 conv
        if level == depth:  # bottleneck over pool(E_{depth-1})
            return encoder(depth - 1, 2 * lo, 2 * hi + 1)
        up_lo, up_hi = decoder(level + 1, lo // 2, hi // 2)  # 2x2 transposed conv
        skip_lo, skip_hi = encoder(level, lo, hi)
        return min(up_lo, skip_lo), max(up_hi, skip_hi)

    before = after = 0
    for phase in range(2**depth):
        lo, hi = decoder(0, phase, phase)
        before = max(before, phase - lo)
        after = max(after, hi - phase)
    return before, after
