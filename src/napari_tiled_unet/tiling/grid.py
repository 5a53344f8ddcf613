"""A grid of blocks covering an array: the one block loop behind every blockwise pass.

Instance labelling, training-data scans, pyramid levels, TIFF tiles and the dask regions all
walk an array block by block in C order; :class:`BlockGrid` is that walk, with the last block
along each axis clipped to the array.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from napari_tiled_unet.errors import UserInputError


@dataclass(frozen=True)
class BlockGrid:
    """Blocks of ``block`` elements covering ``shape``, in C order.

    Parameters
    ----------
    shape : tuple of int
        Shape of the array to cover.
    block : tuple of int
        Block shape, one positive entry per axis of ``shape``; the last block along an axis
        is clipped to the array.

    Examples
    --------
    >>> [s for s in BlockGrid((5,), (2,))]
    [(slice(0, 2, None),), (slice(2, 4, None),), (slice(4, 5, None),)]
    """

    shape: tuple[int, ...]
    block: tuple[int, ...]

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        block = tuple(int(b) for b in self.block)
        if len(block) != len(shape) or any(b < 1 for b in block) or any(n < 0 for n in shape):
            raise UserInputError(
                f"a block grid needs one positive block size per axis of {shape}, got {block}"
            )
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "block", block)

    @property
    def counts(self) -> tuple[int, ...]:
        """Blocks along each axis."""
        return tuple(-(-n // b) for n, b in zip(self.shape, self.block, strict=True))

    def __len__(self) -> int:
        return math.prod(self.counts)

    def indices(self) -> Iterator[tuple[int, ...]]:
        """Block indices in C order."""
        return np.ndindex(*self.counts)

    def region(self, index: Sequence[int]) -> tuple[slice, ...]:
        """The slices of block ``index`` (clipped to the array)."""
        return tuple(
            slice(i * b, min((i + 1) * b, n))
            for i, b, n in zip(index, self.block, self.shape, strict=True)
        )

    def __iter__(self) -> Iterator[tuple[slice, ...]]:
        for index in self.indices():
            yield self.region(index)

    def window(
        self, index: Sequence[int], halo: int
    ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Block ``index`` grown by ``halo`` on each side (clipped), and the block inside it."""
        outer, inner = [], []
        for s, n in zip(self.region(index), self.shape, strict=True):
            start, stop = max(s.start - halo, 0), min(s.stop + halo, n)
            outer.append(slice(start, stop))
            inner.append(slice(s.start - start, s.stop - start))
        return tuple(outer), tuple(inner)
