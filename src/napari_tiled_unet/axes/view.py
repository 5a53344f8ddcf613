"""A lazy view of an array-like (:class:`AxesView`): axes fixed, reordered, channels selected."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_tiled_unet.errors import UserInputError


class AxesView:
    """A lazy view of an array-like: some axes fixed, the others reordered, channels selected.

    Reading ``view[key]`` reads only the matching window of the array (integers and slices
    only, so numpy, memmaps, zarr, dask and napari layer data all work); writing
    ``view[key] = value`` writes it there. Made by :class:`Layout`.

    Parameters
    ----------
    array : array-like
        The array viewed (``.array``).
    order : sequence of int
        Axes of ``array`` in the view's order; with ``fixed`` they must cover every axis.
    fixed : dict of int to int
        Axes of ``array`` held at one index.
    select : sequence of int, optional
        Indices taken along ``channel_axis``, in order (makes the view read-only).
    channel_axis : int, optional
        The axis of ``array`` that ``select`` applies to.
    new_axis : bool
        Add a leading axis of length 1 (the channel axis of a single-channel image;
        makes the view read-only).
    """

    def __init__(
        self,
        array: Any,
        order: Sequence[int],
        fixed: dict[int, int] | None = None,
        *,
        select: Sequence[int] | None = None,
        channel_axis: int | None = None,
        new_axis: bool = False,
    ):
        self.array = array
        self._order = tuple(int(a) for a in order)
        self._fixed = {int(a): int(i) for a, i in (fixed or {}).items()}
        base_ndim = len(array.shape)
        if sorted(self._order + tuple(self._fixed)) != list(range(base_ndim)):
            raise UserInputError(
                f"axes {self._order} and fixed {sorted(self._fixed)} do not cover an array of "
                f"{base_ndim} axes exactly once"
            )
        self._channel_axis = channel_axis
        self._select = None if select is None else np.asarray(select, dtype=np.intp)
        self._new_axis = bool(new_axis)
        shape = [1] if new_axis else []
        for a in self._order:
            if a == channel_axis and self._select is not None:
                shape.append(len(self._select))
            else:
                shape.append(int(array.shape[a]))
        self.shape = tuple(shape)
        self.dtype = np.dtype(array.dtype)
        chunks = getattr(array, "chunks", None)
        self.chunks = None
        if isinstance(chunks, tuple) and all(isinstance(c, int | np.integer) for c in chunks):
            self.chunks = ((1,) if new_axis else ()) + tuple(int(chunks[a]) for a in self._order)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<AxesView {self.shape} {self.dtype} of {type(self.array).__name__}>"

    def _key(self, key: Any) -> tuple:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(j for j, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices ({len(key)}) for a view of {self.ndim} axes")
        key = tuple(k if isinstance(k, slice) else operator.index(k) for k in key)
        return key + (slice(None),) * (self.ndim - len(key))

    def _base(self, key: tuple) -> tuple[list, dict[int, np.ndarray]]:
        base: list[Any] = [slice(None)] * len(self.array.shape)
        for a, i in self._fixed.items():
            base[a] = i
        take: dict[int, np.ndarray] = {}
        for a, k in zip(self._order, key, strict=True):
            if a == self._channel_axis and self._select is not None:
                chosen = self._select[k]
                if chosen.ndim == 0:
                    base[a] = int(chosen)
                elif chosen.size == 0:
                    base[a] = slice(0, 0)
                else:
                    lo, hi = int(chosen.min()), int(chosen.max()) + 1
                    base[a] = slice(lo, hi)
                    take[a] = chosen - lo
            else:
                base[a] = k
        return base, take

    def _kept(self, base: list) -> tuple[list[int], list[int]]:
        """Axes of ``array`` left after indexing, in the array's and in the view's order."""
        kept = [a for a, k in enumerate(base) if isinstance(k, slice)]
        return kept, [a for a in self._order if a in kept]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = self._key(key)
        lead, key = (key[0], key[1:]) if self._new_axis else (None, key)
        base, take = self._base(key)
        data = np.asarray(self.array[tuple(base)])
        kept, view = self._kept(base)
        for a, idx in take.items():
            data = np.take(data, idx, axis=kept.index(a))
        perm = [kept.index(a) for a in view]
        if perm != sorted(perm):
            data = data.transpose(perm)
        if self._new_axis:
            data = data[None][lead]
        return data

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._select is not None or self._new_axis:
            raise TypeError("a view with selected or added channels is read-only")
        base, _ = self._base(self._key(key))
        kept, view = self._kept(base)
        value = np.asarray(value)
        if value.ndim == len(view):
            value = value.transpose([view.index(a) for a in kept])
        self.array[tuple(base)] = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[()]
        return data if dtype is None else data.astype(dtype, copy=False)
