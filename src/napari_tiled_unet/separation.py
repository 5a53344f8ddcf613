"""Instance separation settings, and the class-map refinement that splits touching objects.

An instance-trained network predicts background / interior / boundary. Touching nuclei from
an image unlike the training data often get no boundary between them: their interiors join
and one seed grows into one merged object. :func:`refine_classes` rewrites the class map
before the objects are labelled (:func:`~napari_tiled_unet.postprocess.instances_from_classes`):

1. **Holes.** Background regions with fewer than ``max_hole`` pixels, less than
   ``hole_extent`` pixels long along every axis, that are enclosed by foreground (touch
   neither the image border nor anything but foreground) become interior.
2. **Cores.** Interior pixels farther than ``core_radius`` from any non-interior pixel
   (erosion by a disk; the image border does not erode) stay interior, the others become
   boundary. A neck narrower than the disk between two interiors cuts them into two seeds;
   the seeds then grow back over the whole foreground.
3. **Peaks** (with ``peak_radius``, instead of step 2). Each interior pixel's distance to the
   nearest non-interior pixel (capped at ``2 * peak_radius``) is its local width. Seeds are
   the interior pixels within ``seed_radius`` of a *peak*: a pixel at least as wide as every
   pixel within ``peak_radius`` of it (a 16-sided approximation of the disk), and wider than
   ``core_radius``. Touching nuclei that the network gives one joint interior still have
   one width peak each, also where the neck between them is too wide for the erosion of
   step 2 to cut, and a small nucleus beside a large one keeps its own peak (a larger
   erosion would erase its core and let the neighbour's seed take it). It is the distance
   watershed of the classical pipeline, on the network's interior class.

Each step only looks a bounded distance around each pixel (:attr:`InstanceOptions.halo`),
so :class:`RefinedClasses` computes them window by window for the blockwise labeller with
exactly the whole-image result.

The settings come from the model (:meth:`InstanceOptions.for_model`): a model file that
stores the median diameter of its training objects gets ``core_radius = 0.2 * diameter``,
``peak_radius = 0.5 * diameter``, ``seed_radius = 0.1 * diameter``, ``max_hole`` the area
of a disk of half the diameter (``hole_extent`` its width), and the stored minimum object
size;
an older file keeps the plain behaviour (no refinement, objects down to 4 pixels).

A model trained at many object sizes (scale augmentation; it stores
``object_diameter_range``) does not assume its training median: :meth:`InstanceOptions.for_image`
measures each image's (frame's) object size on its class map and takes the settings of that
diameter. The in-memory and blockwise labellers call it on the same class map, so they agree.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi

from napari_tiled_unet.errors import UserInputError

if TYPE_CHECKING:
    from napari_tiled_unet.model.info import ModelInfo

CORE_FRACTION = 0.2
"""Core radius as a fraction of the training objects' median diameter."""
PEAK_FRACTION = 0.5
"""Peak radius (radius of the disk a width peak dominates), as a fraction of it."""
SEED_FRACTION = 0.1
"""Seed radius (seeds are the interior within it of a width peak), as a fraction of it."""
MIN_SIZE_FRACTION = 0.15
"""Default minimum object size as a fraction of the training objects' median size."""
MEASURE_PIXELS = 1024 * 1024
""":meth:`InstanceOptions.for_image` measures objects on at most this many central pixels."""
MEASURE_ROUNDS = 16
"""... labelling and measuring at most this many times, ..."""
MEASURE_STEP = 1.5
"""... checking a settled diameter against this factor larger, ..."""
MEASURE_MARGIN = 0.05
"""... moving there if those objects measure more than this fraction above it, ..."""
MEASURE_GROWTH = 1.25
"""... or more than this factor above what they measured at the settled diameter, ..."""
MEASURE_CONVEXITY = 0.02
"""... and only if their size-weighted solidity is not lower by more than this, ..."""
MEASURE_TOLERANCE = 0.05
"""... until the measured diameter changes by less than this fraction."""


@dataclass(frozen=True)
class InstanceOptions:
    """How a class map becomes objects.

    Parameters
    ----------
    core_radius : int
        Pixels; interior pixels closer than this to a non-interior pixel do not seed objects
        (0: every interior pixel seeds, the plain rule).
    max_hole : int
        Enclosed background regions smaller than this many pixels are filled (0: none).
    hole_extent : int
        ... and shorter than this many pixels along every axis (0: ``max_hole``, which
        bounds it anyway). It sets how far :class:`RefinedClasses` reads around a window.
    min_seed_size : int
        Seeds (and seedless foreground regions) smaller than this many pixels are dropped.
    min_object_size : int
        Objects smaller than this many pixels after growth are removed (0: none).
    peak_radius : int
        Pixels; when above 0, seeds come from width peaks (step 3 of the module docstring),
        each dominating a disk of this radius, instead of the cores of step 2.
    seed_radius : int
        Pixels; with ``peak_radius``, the interior within this distance of a peak seeds.
    diameter : float
        The object diameter (pixels) these settings are for (0: none given).
    diameter_range : (float, float) or None
        When given, :meth:`for_image` measures each image's object diameter within this
        range, starting at ``diameter``; None: the settings hold as they are.
    """

    core_radius: int = 0
    max_hole: int = 0
    hole_extent: int = 0
    min_seed_size: int = 4
    min_object_size: int = 0
    peak_radius: int = 0
    seed_radius: int = 0
    diameter: float = 0.0
    diameter_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        for name in (
            "core_radius",
            "max_hole",
            "hole_extent",
            "min_seed_size",
            "min_object_size",
            "peak_radius",
            "seed_radius",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 0:
                raise UserInputError(f"{name} must be a non-negative integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.diameter_range is not None:
            low, high = (float(v) for v in self.diameter_range)
            if not 0 < low <= high:
                raise UserInputError(f"diameter_range must be 0 < low <= high, got {low, high}")
            object.__setattr__(self, "diameter_range", (low, high))

    @property
    def halo(self) -> int:
        """Pixels around a window that :func:`refine_classes` needs to be exact inside it."""
        holes = (self.hole_extent or self.max_hole) if self.max_hole else 0
        if self.peak_radius:  # seeds <- peaks <- widths (capped) <- filled holes
            return holes + self.seed_radius + self.peak_radius + self.distance_cap
        return holes + self.core_radius

    @property
    def distance_cap(self) -> int:
        """Widths are capped here, so that a window this much wider measures them exactly."""
        return 2 * self.peak_radius

    @property
    def refines(self) -> bool:
        """Whether :func:`refine_classes` changes anything."""
        return bool(self.max_hole or self.core_radius or self.peak_radius)

    @classmethod
    def for_model(cls, info: ModelInfo | None) -> InstanceOptions:
        """The settings for a model, from the object size stored in its file.

        A file without ``object_diameter`` (older versions, or a model trained before
        labels were measured) gets the plain rule, with its ``min_object_size`` if stored.
        """
        diameter = None if info is None else info.object_diameter
        stored_min = None if info is None else info.min_object_size
        if not diameter:
            return cls(min_object_size=int(stored_min or 0))
        ndim = len(info.axes.replace("C", "")) if info.axes else 2
        options = cls.for_diameter(diameter, ndim, stored_min)
        if info.object_diameter_range is None:
            return options
        return dataclasses.replace(options, diameter_range=info.object_diameter_range)

    @classmethod
    def for_diameter(
        cls, diameter: float, ndim: int, min_object_size: int | None = None
    ) -> InstanceOptions:
        """The settings for objects of ``diameter`` pixels in ``ndim`` spatial dimensions;
        ``min_object_size`` None: :data:`MIN_SIZE_FRACTION` of their size."""
        if min_object_size is None:
            min_object_size = max(round(MIN_SIZE_FRACTION * ball_volume(diameter, ndim)), 1)
        return cls(
            core_radius=round(CORE_FRACTION * diameter),
            peak_radius=round(PEAK_FRACTION * diameter),
            seed_radius=round(SEED_FRACTION * diameter),
            max_hole=round(ball_volume(diameter / 2, ndim)),
            hole_extent=math.ceil(diameter / 2) + 1,
            min_object_size=int(min_object_size),
            diameter=float(diameter),
        )

    def for_image(self, classes: Any) -> InstanceOptions:
        """The settings for one image (or frame) of class map ``classes``.

        Without ``diameter_range``: these. With it, the objects' size is measured on the
        class map's central part (at most :data:`MEASURE_PIXELS` pixels). Labelled with the
        settings of a diameter ``d``, the objects measure ``m(d)`` (median diameter, kept
        within the range): settings for too small a ``d`` cut objects into pieces, too large
        a ``d`` merges them. From ``d = diameter``, ``d <- m(d)`` is repeated until it
        changes by less than :data:`MEASURE_TOLERANCE`. Settings can also cut large objects
        into pieces of about ``d`` (so ``m(d) = d`` at the wrong size), so the settled ``d``
        is checked against ``L`` = :data:`MEASURE_STEP` times it. Objects labelled at ``L``
        that measure more than :data:`MEASURE_MARGIN` above ``L``, or more than
        :data:`MEASURE_GROWTH` times ``m(d)``, are pieces joined back, or touching objects
        merged: the search goes on from ``m(L)`` only if they are as convex as at ``d``
        (size-weighted solidity, :func:`~napari_tiled_unet.object_size.convexity`, lower
        by at most :data:`MEASURE_CONVEXITY`), since two joined nuclei have a neck and two
        halves of one do not. At most :data:`MEASURE_ROUNDS` labellings.

        Returns
        -------
        InstanceOptions
            Fixed settings (no ``diameter_range``): those of the measured diameter, or
            these without the range when nothing is found.
        """
        if self.diameter_range is None:
            return self
        from napari_tiled_unet.object_size import convexity, median_diameter
        from napari_tiled_unet.postprocess import instances_from_classes

        crop = np.asarray(classes[_central_window(tuple(classes.shape), MEASURE_PIXELS)])
        low, high = self.diameter_range

        def measure(diameter: float) -> tuple[float | None, np.ndarray]:
            options = self.for_diameter(diameter, crop.ndim)
            objects = instances_from_classes(
                refine_classes(crop, options),
                min_size=options.min_seed_size,
                min_object_size=options.min_object_size,
            )
            measured = median_diameter([objects], crop.ndim)
            return (None if measured is None else min(max(measured, low), high)), objects

        diameter = min(max(self.diameter, low), high)
        found = None
        for _ in range(MEASURE_ROUNDS):
            measured, objects = measure(diameter)
            if measured is None:
                break
            found = measured
            if abs(measured - diameter) > MEASURE_TOLERANCE * diameter:
                diameter = measured
                continue
            larger = min(diameter * MEASURE_STEP, high)
            if larger <= diameter:
                break
            grown, joined = measure(larger)
            if grown is None or (
                grown <= larger * (1 + MEASURE_MARGIN) and grown <= MEASURE_GROWTH * measured
            ):
                break
            if convexity(joined) < convexity(objects) - MEASURE_CONVEXITY:
                break
            diameter = found = grown
        if found is None:
            return dataclasses.replace(self, diameter_range=None)
        return self.for_diameter(found, crop.ndim)


def _central_window(shape: tuple[int, ...], pixels: int) -> tuple[slice, ...]:
    """The central window of ``shape`` with at most ``pixels`` pixels (same proportions)."""
    shrink = min(1.0, (pixels / max(math.prod(shape), 1)) ** (1 / max(len(shape), 1)))
    window = []
    for n in shape:
        size = max(1, int(n * shrink))
        start = (n - size) // 2
        window.append(slice(start, start + size))
    return tuple(window)


def ball_volume(diameter: float, ndim: int) -> float:
    """Area (2D) or volume (3D) of a disk / ball of ``diameter`` pixels."""
    radius = diameter / 2
    return math.pi * radius**2 if ndim < 3 else 4 / 3 * math.pi * radius**3


def _disk(radius: int, ndim: int) -> np.ndarray:
    grid = np.indices((2 * radius + 1,) * ndim) - radius
    return (grid**2).sum(axis=0) <= radius**2


def refine_classes(classes: np.ndarray, options: InstanceOptions) -> np.ndarray:
    """Fill small holes and keep only object cores (or seeds at width peaks) as interior
    (see the module docstring).

    Parameters
    ----------
    classes : ndarray of int, shape (*spatial)
        0 background, 1 interior, 2 (or any other non-zero value) boundary.
    options : InstanceOptions

    Returns
    -------
    ndarray of uint8, shape (*spatial)
        The refined class map (0, 1, 2; other non-zero values kept).
    """
    classes = np.asarray(classes)
    out = classes.astype(np.uint8, copy=True)
    structure = ndi.generate_binary_structure(classes.ndim, 1)
    if options.max_hole and out.size:
        regions, n = ndi.label(out == 0, structure=structure)
        if n:
            small = np.bincount(regions.ravel(), minlength=n + 1) < options.max_hole
            if options.hole_extent:
                for k, box in enumerate(ndi.find_objects(regions), 1):
                    if box is not None and small[k]:
                        small[k] = all(b.stop - b.start < options.hole_extent for b in box)
            for axis in range(regions.ndim):  # touching any edge of the window: not a hole
                for end in (0, -1):
                    small[np.take(regions, end, axis=axis)] = False
            small[0] = False
            out[small[regions]] = 1
    if options.peak_radius and out.size:
        interior = out == 1
        out[interior & ~_peak_seeds(interior, options)] = 2
    elif options.core_radius and out.size:
        interior = out == 1
        core = ndi.binary_erosion(
            interior, structure=_disk(options.core_radius, classes.ndim), border_value=1
        )
        out[interior & ~core] = 2
    return out


def _disk_maximum(values: np.ndarray, radius: int) -> np.ndarray:
    """The largest of ``values`` (>= 0) within about ``radius`` of each pixel.

    3-pixel maximum filters in sequence that approximate a disk (ball; scikit-image's
    ``decomposition="sequence"``), each as a few shifted maxima: a cost linear in the radius,
    where a disk footprint at once costs its area per pixel. Nothing beyond the array counts.
    """
    from skimage.morphology import ball, disk

    if values.ndim not in (2, 3):  # other dimensionalities: the box
        return ndi.maximum_filter(values, size=2 * radius + 1, mode="constant")
    shape = disk if values.ndim == 2 else ball
    for element, repeats in shape(radius, decomposition="sequence"):
        offsets = [o for o in np.argwhere(element) - 1 if o.any()]
        for _ in range(int(repeats)):
            values = _shifted_maximum(values, offsets)
    return values


def _shifted_maximum(values: np.ndarray, offsets: list[np.ndarray]) -> np.ndarray:
    """``out[p] = max(values[p], values[p + o] for o in offsets)``, outside the array 0."""
    out = values.copy()
    n = values.shape
    for o in offsets:
        target = tuple(slice(max(-k, 0), size - max(k, 0)) for k, size in zip(o, n, strict=True))
        source = tuple(slice(max(k, 0), size + min(k, 0)) for k, size in zip(o, n, strict=True))
        np.maximum(out[target], values[source], out=out[target])
    return out


def _peak_seeds(interior: np.ndarray, options: InstanceOptions) -> np.ndarray:
    """The interior pixels within ``seed_radius`` of a width peak (module docstring, step 3).

    Widths are compared as squared distances, which are integers: the same order, in a
    small integer type.
    """
    cap = options.distance_cap**2
    dtype = np.uint16 if cap <= np.iinfo(np.uint16).max else np.uint32
    if interior.all():  # no pixel to measure from: every width is at least the cap
        width = np.full(interior.shape, cap, dtype)
    else:
        width = np.rint(np.square(ndi.distance_transform_edt(interior)))
        width = np.minimum(width, cap).astype(dtype)
    peaks = _disk_maximum(width, options.peak_radius)
    markers = interior & (width >= peaks) & (width > options.core_radius**2)
    if not options.seed_radius:
        return markers
    return interior & ndi.binary_dilation(
        markers, structure=_disk(options.seed_radius, interior.ndim)
    )


class RefinedClasses:
    """A read-only view of ``refine_classes(classes, options)`` computed per window.

    ``view[region]`` reads ``region`` of ``classes`` widened by ``options.halo`` pixels (as
    far as the image goes), refines it and returns the ``region`` part: exactly the
    whole-image result, reading only a window. Regions are tuples of slices with step 1.
    """

    def __init__(self, classes: Any, options: InstanceOptions) -> None:
        self.classes = classes
        self.options = options
        self.shape = tuple(int(n) for n in classes.shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = len(self.shape)

    def __getitem__(self, region: tuple[slice, ...]) -> np.ndarray:
        if not isinstance(region, tuple):
            region = (region,)
        region = region + (slice(None),) * (self.ndim - len(region))
        inner, window = [], []
        for s, n in zip(region, self.shape, strict=True):
            start, stop, step = s.indices(n)
            if step != 1:
                raise ValueError("RefinedClasses reads regions with step 1 only")
            lo = max(start - self.options.halo, 0)
            hi = min(stop + self.options.halo, n)
            window.append(slice(lo, hi))
            inner.append(slice(start - lo, stop - lo))
        refined = refine_classes(np.asarray(self.classes[tuple(window)]), self.options)
        return refined[tuple(inner)]

    def __array__(self, dtype=None, copy=None):
        whole = refine_classes(np.asarray(self.classes), self.options)
        return whole if dtype is None else whole.astype(dtype)
