"""Augmentation of an image tile together with its label tiles, keeping them aligned.

Every geometric transform (flips, rotations, elastic deformation, scale) is drawn once and
applied to the image (smooth interpolation) and to each label-like array (nearest neighbour), so
a label pixel always lands where its image pixel lands. Appearance transforms (gamma, uneven
background, blur, dimming, noise, intensity jitter) change the image only. All are whole-array
numpy / scipy operations.
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

    def draw_scale(self, rng: np.random.Generator) -> float:
        """The magnification of the next tile: log-uniform in ``[1 / scale, scale]``.

        1.0 without drawing anything when scale augmentation is off, so switching it off
        leaves every other random choice as it was.
        """
        if self.scale <= 1:
            return 1.0
        return float(np.exp(rng.uniform(-np.log(self.scale), np.log(self.scale))))

    def __call__(
        self,
        rng: np.random.Generator,
        image: np.ndarray,
        labels: Sequence[np.ndarray],
        shape: Sequence[int] | None = None,
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
        shape : sequence of int or None
            Spatial shape of the result; None keeps ``spatial``. A different shape resamples
            the tile (the same region, stretched): this is how scale augmentation works, on a
            region read :func:`scaled_region` larger or smaller than the tile.

        Returns
        -------
        image : ndarray of float32, shape (C, *shape)
        labels : list of ndarray, shapes ``shape``, dtypes as given
        """
        spatial = image.shape[1:]
        labels = list(labels)
        for lab in labels:
            if lab.shape != spatial:
                raise UserInputError(
                    f"label tile shape {lab.shape} differs from image tile {spatial}"
                )
        ndim = len(spatial)
        out_shape = spatial if shape is None else tuple(int(n) for n in shape)
        if len(out_shape) != ndim:
            raise UserInputError(f"output shape {out_shape} is not {ndim}D like the tile")
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
        resize = tuple(image.shape[1:]) != out_shape
        if self.elastic or resize:
            if self.elastic:
                displacement = elastic_displacement(
                    rng, out_shape, self.elastic_sigma, self.elastic_grid
                )
            else:
                displacement = np.zeros((ndim, *out_shape), np.float32)
            if resize:
                zoom = [n / m for n, m in zip(image.shape[1:], out_shape, strict=True)]
                image = _antialias(image, zoom)
                displacement = _stretch(displacement, zoom)
            image = np.stack([warp(channel, displacement, order=3) for channel in image])
            labels = [warp(lab, displacement, order=0) for lab in labels]
        image = np.ascontiguousarray(image, dtype=np.float32)
        labels = [np.ascontiguousarray(lab) for lab in labels]
        if self.appearance:
            image = self._appearance_before_jitter(rng, image)
        if self.intensity:
            channels = image.shape[0]
            gain = 1 + rng.uniform(-self.intensity_scale, self.intensity_scale, channels)
            offset = rng.uniform(-self.intensity_shift, self.intensity_shift, channels)
            shape = (channels,) + (1,) * ndim
            image = image * gain.reshape(shape).astype(np.float32)
            image += offset.reshape(shape).astype(np.float32)
        if self.appearance:
            image = self._noise(rng, image)
        return image, labels

    def _appearance_before_jitter(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        """Gamma, uneven background, blur and dimming, each with probability 1/2 (a range of 0,
        or a dimming of 1: never)."""
        ndim = image.ndim - 1
        channels = image.shape[0]
        shape = (channels,) + (1,) * ndim
        if self.gamma > 1 and rng.random() < 0.5:
            gamma = np.exp(rng.uniform(-np.log(self.gamma), np.log(self.gamma), channels))
            axes = tuple(range(1, ndim + 1))
            low = image.min(axis=axes, keepdims=True)
            span = np.maximum(image.max(axis=axes, keepdims=True) - low, 1e-6)
            image = low + span * ((image - low) / span) ** gamma.reshape(shape)
        if self.uneven_background > 0 and rng.random() < 0.5:
            field = elastic_displacement(rng, image.shape[1:], 1.0, 3)[0]
            field -= field.min()
            amplitude = rng.uniform(0, self.uneven_background, channels)
            image = image + amplitude.reshape(shape) * field / max(float(field.max()), 1e-6)
        if self.blur > 0 and rng.random() < 0.5:
            sigma = float(rng.uniform(0, self.blur))
            # Y and X only: a 3D stack's Z is sampled differently and blurred by the optics.
            sigmas = (0,) * (ndim - 2) + (sigma,) * min(ndim, 2)
            image = np.stack([ndi.gaussian_filter(channel, sigmas) for channel in image])
        if self.dimming > 1 and rng.random() < 0.5:
            factor = np.exp(rng.uniform(-np.log(self.dimming), 0.0, channels))
            image = image * factor.reshape(shape).astype(np.float32)
        return image.astype(np.float32, copy=False)

    def _noise(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        """Poisson (shot) noise, then Gaussian noise, each with probability 1/2."""
        if self.poisson_noise > 0 and rng.random() < 0.5:
            level = float(rng.uniform(0.01, max(self.poisson_noise, 0.01)))
            photons = 1 / level**2  # per unit of normalised intensity
            axes = tuple(range(1, image.ndim))
            low = image.min(axis=axes, keepdims=True)
            counts = rng.poisson(np.maximum(image - low, 0) * photons)
            image = (low + counts / photons).astype(np.float32)
        if self.gaussian_noise > 0 and rng.random() < 0.5:
            std = float(rng.uniform(0, self.gaussian_noise))
            image = image + rng.normal(0, std, image.shape).astype(np.float32)
        return image.astype(np.float32, copy=False)


def scaled_region(
    start: Sequence[int], stop: Sequence[int], factor: float
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The region to read so that, resampled to ``stop - start``, objects look ``factor`` times
    larger: the same centre, ``1 / factor`` times the size in the last two (Y, X) axes.

    Parameters
    ----------
    start, stop : sequence of int
        The tile's region, pixels.
    factor : float
        Magnification (> 1: objects grow, a smaller region is read).

    Returns
    -------
    (start, stop) : tuples of int
    """
    ndim = len(start)
    new_start, new_stop = [], []
    for axis, (a, b) in enumerate(zip(start, stop, strict=True)):
        size = b - a
        if axis >= ndim - 2:
            size = max(round((b - a) / factor), 1)
        low = a + ((b - a) - size) // 2
        new_start.append(low)
        new_stop.append(low + size)
    return tuple(new_start), tuple(new_stop)


def _stretch(displacement: np.ndarray, zoom: Sequence[float]) -> np.ndarray:
    """Turn an output-grid displacement into one that samples a source ``zoom`` times larger.

    Pixel centres are aligned: output pixel ``i`` maps to source ``(i + 0.5) * zoom - 0.5``, so
    the returned field added to the output grid gives source coordinates.
    """
    shape = displacement.shape[1:]
    out = np.empty_like(displacement)
    for axis, (n, z) in enumerate(zip(shape, zoom, strict=True)):
        index = np.arange(n, dtype=np.float32).reshape((-1,) + (1,) * (len(shape) - axis - 1))
        target = (index + displacement[axis] + 0.5) * z - 0.5
        out[axis] = target - index
    return out


def _antialias(image: np.ndarray, zoom: Sequence[float]) -> np.ndarray:
    """Smooth before shrinking (``zoom`` > 1 along an axis), so that resampling does not alias."""
    sigma = [max((z - 1) / 2, 0) for z in zoom]
    if not any(sigma):
        return image
    return np.stack([ndi.gaussian_filter(channel, sigma) for channel in image])


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
    displacement : ndarray of float, shape (ndim, *out)
        Pixels, as returned by :func:`elastic_displacement`; ``out`` is the result's shape
        (``spatial`` unless resampling to another size).
    order : int
        Spline order: 3 (cubic) for images, 0 (nearest neighbour) for labels, whose values and
        dtype are kept.

    Returns
    -------
    ndarray, shape (*out)
    """
    grid = np.indices(displacement.shape[1:], dtype=np.float32)
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
