"""Augmentation of an image tile together with its label tiles, keeping them aligned.

Every geometric transform is drawn once and applied to the image (smooth interpolation) and to
each label-like array (nearest neighbour), so a label pixel always lands where its image pixel
lands.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.training.config import AugmentSpec


@dataclass(frozen=True)
class Augmentation(AugmentSpec):
    """An :class:`~napari_tiled_unet.training.config.AugmentSpec` that can be applied to tiles.

    Same parameters as :class:`~napari_tiled_unet.training.config.AugmentSpec`; calling it
    augments one image tile together with its label tiles.
    """

    @classmethod
    def from_spec(cls, spec: AugmentSpec) -> Augmentation:
        """The augmentation a :class:`~napari_tiled_unet.training.config.AugmentSpec` describes
        (no elastic deformation when its ``elastic_sigma`` is 0)."""
        return cls(
            **{**dataclasses.asdict(spec), "elastic": spec.elastic and spec.elastic_sigma > 0}
        )

    def __call__(
        self, rng: np.random.Generator, image: np.ndarray, labels: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Augment one tile.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of every random choice.
        image : ndarray of float32, shape (C, *spatial)
            Normalised image tile, channels first.
        labels : sequence of ndarray, each of shape (*spatial)
            Label-like arrays (labels, masks) transformed exactly like the image, with nearest
            neighbour interpolation so their values are kept.

        Returns
        -------
        image : ndarray of float32, shape (C, *spatial)
        labels : list of ndarray, shapes and dtypes as given
        """
        spatial = image.shape[1:]
        labels = list(labels)
        for lab in labels:
            if lab.shape != spatial:
                raise UserInputError(
                    f"label tile shape {lab.shape} differs from image tile {spatial}"
                )
        ndim = len(spatial)
        if self.flips:
            for axis in range(ndim):
                if rng.random() < 0.5:
                    image = np.flip(image, axis + 1)
                    labels = [np.flip(lab, axis) for lab in labels]
        if self.rotations and ndim >= 2:
            square = spatial[-1] == spatial[-2]
            k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
            if k:
                image = np.rot90(image, k, axes=(ndim - 1, ndim))
                labels = [np.rot90(lab, k, axes=(ndim - 2, ndim - 1)) for lab in labels]
        if self.elastic:
            displacement = elastic_displacement(rng, spatial, self.elastic_sigma, self.elastic_grid)
            image = np.stack([warp(channel, displacement, order=3) for channel in image])
            labels = [warp(lab, displacement, order=0) for lab in labels]
        image = np.ascontiguousarray(image, dtype=np.float32)
        labels = [np.ascontiguousarray(lab) for lab in labels]
        if self.intensity:
            channels = image.shape[0]
            gain = 1 + rng.uniform(-self.intensity_scale, self.intensity_scale, channels)
            offset = rng.uniform(-self.intensity_shift, self.intensity_shift, channels)
            shape = (channels,) + (1,) * ndim
            image = image * gain.reshape(shape).astype(np.float32)
            image += offset.reshape(shape).astype(np.float32)
        return image, labels


def elastic_displacement(
    rng: np.random.Generator, shape: Sequence[int], sigma: float = 10.0, grid: int = 3
) -> np.ndarray:
    """A smooth random displacement field, as in the U-Net paper.

    Displacement vectors are drawn on a coarse ``grid``-per-axis lattice spanning the tile
    (corners included) from a normal distribution with ``sigma`` pixels standard deviation,
    and interpolated to every pixel with cubic splines (bicubic in 2D).

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : sequence of int
        Spatial shape of the tile, pixels.
    sigma : float
        Standard deviation of the coarse displacements, pixels.
    grid : int
        Lattice points per axis (>= 2).

    Returns
    -------
    ndarray of float32, shape (ndim, *shape)
        Displacement along each axis, pixels.
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    coarse = rng.normal(0.0, sigma, size=(ndim,) + (grid,) * ndim)
    # The tensor-product cubic spline through the lattice is separable: interpolate one axis
    # at a time with a precomputed (pixels x lattice points) matrix.
    field = coarse
    for axis, n in enumerate(shape):
        field = np.moveaxis(
            np.tensordot(_spline_matrix(n, grid), np.moveaxis(field, axis + 1, 0), axes=1),
            0,
            axis + 1,
        )
    return np.ascontiguousarray(field, dtype=np.float32)


@functools.lru_cache(maxsize=64)
def _spline_matrix(size: int, grid: int) -> np.ndarray:
    """Cubic-spline interpolation weights, shape (size, grid), from ``grid`` lattice points to
    ``size`` pixels (pixel 0 on lattice point 0, the last pixel on the last)."""
    coords = np.linspace(0, grid - 1, size)[None]
    return np.stack(
        [ndi.map_coordinates(unit, coords, order=3, mode="reflect") for unit in np.eye(grid)],
        axis=1,
    )


def warp(array: np.ndarray, displacement: np.ndarray, order: int) -> np.ndarray:
    """Resample ``array`` at ``identity + displacement``, mirroring at the tile border.

    Parameters
    ----------
    array : ndarray, shape (*spatial)
    displacement : ndarray of float, shape (ndim, *spatial)
        Pixels, as returned by :func:`elastic_displacement`.
    order : int
        Spline order: 3 (cubic) for images, 0 (nearest neighbour) for labels, whose values and
        dtype are kept.

    Returns
    -------
    ndarray, shape (*spatial)
    """
    grid = np.indices(array.shape, dtype=np.float32)
    coords = grid + displacement
    if order == 0:
        # Nearest neighbour by rounding: exact for any integer dtype, no float round trip.
        index = tuple(
            _mirror(np.rint(c).astype(np.intp), n) for c, n in zip(coords, array.shape, strict=True)
        )
        return array[index]
    return ndi.map_coordinates(
        np.asarray(array, np.float32), coords, order=order, mode="reflect"
    ).astype(np.float32)


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """Fold integer indices into ``[0, n)`` by half-sample symmetric reflection ('reflect' mode)."""
    period = 2 * n
    index = np.mod(index, period)
    return np.where(index >= n, period - 1 - index, index)
