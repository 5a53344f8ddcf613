"""Synthetic fluorescence nuclei with their instance labels, generated from a seed.

Two generators, plain numpy and scipy:

- :func:`blurred_discs`: the shipped sample (File ▸ Open Sample ▸ Synthetic nuclei), separated
  discs; ``benchmarks/make_synthetic_sample.py`` writes it to ``sample_data/``.
- :func:`synthetic_nuclei`: training and evaluation images with variety, for what a model trained
  on one real data set rarely sees: touching and clustered nuclei, elongated ones at any
  orientation, chromatin-like texture, an uneven background and several signal-to-noise ratios.
  :func:`synthetic_nuclei_set` draws a set of such images, each in its own style.

Nothing is shipped or downloaded: the same seed gives the same images on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_tiled_unet.errors import UserInputError

#: Seed of the shipped sample (the year of the U-Net paper).
SAMPLE_SEED = 2015
#: Dimmest a nucleus gets with ``synthetic_nuclei(..., dim_share=...)``, relative to its
#: drawn brightness.
DIM_FLOOR = 0.2
#: Second seed word of the random stream that chooses dimmed nuclei.
DIM_STREAM = 17
#: Background signal under the uneven field, relative to the mean nucleus brightness.
BACKGROUND_LEVEL = 0.08


def blurred_discs(
    shape: tuple[int, int] = (256, 256), seed: int = SAMPLE_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image, labels)``: a uint16 image of blurred discs and their uint16 instance ids.

    Discs (radius 6-13 px) are placed without overlap; each has its own brightness. The image is
    blurred (sigma 1.5 px), put on a smooth background gradient and given Poisson and Gaussian
    noise, roughly like a widefield nuclear stain. With the defaults this is the shipped
    ``sample_data/synthetic_nuclei.tif`` (and ``_labels.tif``), byte for byte.
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    signal = np.zeros(shape, np.float64)
    n = 0
    for _ in range(400):
        radius = rng.uniform(6, 13)
        cy, cx = rng.uniform(radius, np.array(shape) - radius)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        grown = ndi.binary_dilation(disc, iterations=2)
        if labels[grown].any():
            continue
        n += 1
        labels[disc] = n
        signal[disc] = rng.uniform(600, 1800)
        if n == 40:
            break
    signal = ndi.gaussian_filter(signal, 1.5)
    background = 200 + 80 * (yy / shape[0]) + 40 * np.sin(xx / shape[1] * np.pi)
    image = rng.poisson(signal + background) + rng.normal(0, 15, shape)
    return np.clip(image, 0, 65535).astype(np.uint16), labels


@dataclass(frozen=True)
class NucleiStyle:
    """How one synthetic image looks.

    Parameters
    ----------
    radius : (float, float)
        Range of the nuclei's mean radius, pixels.
    elongation : float
        Largest ratio of long to short axis (1: discs only), >= 1.
    touching : float
        Share of nuclei, in [0, 1], placed against a neighbour (clusters) rather than freely.
    density : float
        Share of the image, in (0, 1], covered by nuclei when they fit.
    texture : float
        Strength of chromatin-like texture inside nuclei, relative to their brightness (0: flat).
    background : float
        Amplitude of the uneven background (a smooth random field plus a gradient), relative to
        the mean nucleus brightness.
    photons : float
        Expected photons at the mean nucleus brightness; the Poisson noise follows from it
        (signal-to-noise ratio about ``sqrt(photons)`` before read noise).
    read_noise : float
        Standard deviation of the additive Gaussian noise, in photons.
    blur : float
        Standard deviation of the Gaussian point spread function, pixels.
    """

    radius: tuple[float, float] = (8.0, 15.0)
    elongation: float = 1.6
    touching: float = 0.6
    density: float = 0.35
    texture: float = 0.25
    background: float = 0.3
    photons: float = 200.0
    read_noise: float = 4.0
    blur: float = 1.5

    def __post_init__(self) -> None:
        low, high = self.radius
        if not 1 <= low <= high:
            raise UserInputError(
                f"NucleiStyle.radius must be (low, high), 1 <= low <= high, got {self.radius}"
            )
        if self.elongation < 1:
            raise UserInputError(f"NucleiStyle.elongation must be >= 1, got {self.elongation}")
        if not (0 <= self.touching <= 1 and 0 < self.density <= 1):
            raise UserInputError(
                f"NucleiStyle.touching must be in [0, 1] and density in (0, 1], got "
                f"{self.touching}, {self.density}"
            )
        if min(self.texture, self.background, self.read_noise, self.blur) < 0 or self.photons <= 0:
            raise UserInputError(
                "NucleiStyle texture, background, read_noise, blur must be >= 0, photons > 0"
            )

    @classmethod
    def draw(cls, rng: np.random.Generator) -> NucleiStyle:
        """A random style: sizes, crowding, texture, background and noise from wide ranges
        (signal-to-noise ratios from about 3 to 45)."""
        low = float(rng.uniform(6, 11))
        return cls(
            radius=(low, low * float(rng.uniform(1.3, 1.8))),
            elongation=float(rng.uniform(1.0, 2.2)),
            touching=float(rng.uniform(0.3, 0.9)),
            density=float(rng.uniform(0.2, 0.5)),
            texture=float(rng.uniform(0.0, 0.5)),
            background=float(rng.uniform(0.0, 0.6)),
            photons=float(np.exp(rng.uniform(np.log(10), np.log(2000)))),
            read_noise=float(rng.uniform(1, 8)),
            blur=float(rng.uniform(0.8, 2.5)),
        )


def synthetic_nuclei(
    shape: tuple[int, int] = (256, 256),
    seed: int = 0,
    style: NucleiStyle | None = None,
    dim_share: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic fluorescence image of nuclei and its instance labels.

    Nuclei are ellipses (random axes, orientation, slightly irregular outline) placed either
    freely or against an earlier nucleus, so that clusters of touching nuclei form; where two
    overlap, each pixel belongs to the nucleus whose outline is farther away (a straight,
    gap-free contact line). Each nucleus has its own brightness, dims towards its edge and
    carries smooth multiplicative texture; the whole is blurred, put on a smooth uneven
    background and imaged with Poisson (shot) and Gaussian (read) noise.

    Parameters
    ----------
    shape : (int, int)
        Image size (Y, X), pixels.
    seed : int
        Seed of every random choice; the same seed and style give the same arrays.
    style : NucleiStyle or None
        How the image looks; None draws one from the seed (:meth:`NucleiStyle.draw`).
    dim_share : float
        Share of nuclei, in [0, 1], dimmed by a factor drawn log-uniformly down to
        :data:`DIM_FLOOR` (real stains vary more from nucleus to nucleus than the default
        0.5-1.5), but never below twice the background noise: a dimmed nucleus stays
        visible. 0 (the default) gives the same image as before this option existed.

    Returns
    -------
    image : ndarray of uint16, shape ``shape``
        Photon counts plus an offset of 100.
    labels : ndarray of uint16, shape ``shape``
        Instance ids 1..N, 0 = background.
    """
    if len(shape) != 2 or min(shape) < 16:
        raise UserInputError(f"synthetic_nuclei: shape must be (Y, X), each >= 16, got {shape}")
    if not 0 <= dim_share <= 1:
        raise UserInputError(f"synthetic_nuclei: dim_share must be in [0, 1], got {dim_share}")
    rng = np.random.default_rng(seed)
    if style is None:
        style = NucleiStyle.draw(rng)
    nuclei = _place_nuclei(rng, shape, style)
    labels, profile = _paint(shape, nuclei)
    brightness = np.concatenate([[0.0], rng.uniform(0.5, 1.5, len(nuclei))])
    if dim_share:
        brightness[1:] *= _dimming(seed, brightness[1:], style, dim_share)
    signal = brightness[labels] * profile
    if style.texture > 0:
        fine = ndi.gaussian_filter(rng.normal(size=shape), 1.0)
        coarse = ndi.gaussian_filter(rng.normal(size=shape), 3.0)
        texture = fine / (fine.std() + 1e-12) + 0.7 * coarse / (coarse.std() + 1e-12)
        signal *= np.clip(1 + style.texture * 0.5 * texture, 0.2, None)
    if style.blur > 0:
        signal = ndi.gaussian_filter(signal, style.blur)
    signal += BACKGROUND_LEVEL + style.background * _smooth_field(rng, shape)
    image = rng.poisson(signal * style.photons) + rng.normal(0, style.read_noise, shape)
    image = np.clip(np.rint(image + 100), 0, 65535).astype(np.uint16)
    return image, labels


def synthetic_nuclei_set(
    count: int, shape: tuple[int, int] = (256, 256), seed: int = 0, dim_share: float = 0.0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` synthetic images, each in its own random style (see :func:`synthetic_nuclei`).

    Image ``i`` is ``synthetic_nuclei(shape, seed=seed * 1000 + i, dim_share=dim_share)``, so
    sets with different seeds share no image and a longer set starts with the shorter one.
    """
    return [
        synthetic_nuclei(shape, seed=seed * 1000 + i, dim_share=dim_share) for i in range(count)
    ]


def _dimming(seed: int, brightness: np.ndarray, style: NucleiStyle, share: float) -> np.ndarray:
    """Factors (<= 1) for :func:`synthetic_nuclei`'s ``dim_share``, from a random stream of
    their own so that the rest of the image is drawn as without them."""
    rng = np.random.default_rng((seed, DIM_STREAM))
    chosen = rng.random(brightness.size) < share
    draws = rng.random(brightness.size)
    # Noise of the brightest background, in units of the mean nucleus brightness.
    level = (BACKGROUND_LEVEL + style.background) * style.photons
    noise = math.sqrt(level + style.read_noise**2) / style.photons
    floor = np.clip(np.maximum(DIM_FLOOR, 2 * noise / brightness), None, 1.0)
    factor = np.exp(np.log(floor) * draws)
    return np.where(chosen, factor, 1.0)


@dataclass(frozen=True)
class _Nucleus:
    cy: float
    cx: float
    a: float  # semi-axis along the orientation, pixels
    b: float  # the other semi-axis
    angle: float
    wobble: tuple[float, float, float, float]  # amplitudes and phases of outline harmonics 3, 4

    @property
    def radius(self) -> float:
        return math.sqrt(self.a * self.b)


def _place_nuclei(
    rng: np.random.Generator, shape: tuple[int, int], style: NucleiStyle
) -> list[_Nucleus]:
    """Nuclei covering about ``style.density`` of the image, a share of them in contact."""
    target = style.density * shape[0] * shape[1]
    nuclei: list[_Nucleus] = []
    area = 0.0
    for _ in range(40 * int(target / (math.pi * style.radius[0] ** 2) + 10)):
        if area >= target:
            break
        r = rng.uniform(*style.radius)
        ratio = rng.uniform(1.0, style.elongation)
        a, b = r * math.sqrt(ratio), r / math.sqrt(ratio)
        against = bool(nuclei) and rng.random() < style.touching
        if against:
            anchor = nuclei[int(rng.integers(len(nuclei)))]
            direction = rng.uniform(0, 2 * math.pi)
            reach = (anchor.radius + r) * rng.uniform(0.8, 0.95)
            cy = anchor.cy + reach * math.sin(direction)
            cx = anchor.cx + reach * math.cos(direction)
            if not (0 <= cy < shape[0] and 0 <= cx < shape[1]):
                continue
        else:
            cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        wobble = (
            rng.uniform(0, 0.06),
            rng.uniform(0, 2 * math.pi),
            rng.uniform(0, 0.04),
            rng.uniform(0, 2 * math.pi),
        )
        candidate = _Nucleus(cy, cx, a, b, rng.uniform(0, math.pi), wobble)
        # A nucleus placed against another may overlap it a little (the contact is cut
        # straight), never nest in it; one placed freely keeps clear of all others.
        if any(
            math.hypot(n.cy - cy, n.cx - cx)
            < (0.78 * (n.radius + candidate.radius) if against else n.a + candidate.a + 2)
            for n in nuclei
        ):
            continue
        nuclei.append(candidate)
        area += math.pi * a * b
    return nuclei


def _paint(shape: tuple[int, int], nuclei: list[_Nucleus]) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels and a brightness profile (1 at the centre, ~0.75 at the edge).

    Each pixel goes to the nucleus with the smallest normalised distance (< 1 inside), so
    overlapping nuclei meet along a line; labels are renumbered 1..N over the nuclei seen.
    """
    best = np.full(shape, np.inf)
    owner = np.zeros(shape, np.int64)
    for index, n in enumerate(nuclei, start=1):
        reach = n.a * 1.15 + 1
        y0, y1 = max(int(n.cy - reach), 0), min(int(n.cy + reach) + 2, shape[0])
        x0, x1 = max(int(n.cx - reach), 0), min(int(n.cx + reach) + 2, shape[1])
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - n.cy, xx - n.cx
        c, s = math.cos(n.angle), math.sin(n.angle)
        u, v = dx * c + dy * s, -dx * s + dy * c
        theta = np.arctan2(v, u)
        outline = (
            1
            + n.wobble[0] * np.cos(3 * theta + n.wobble[1])
            + n.wobble[2] * np.cos(4 * theta + n.wobble[3])
        )
        distance = np.sqrt((u / n.a) ** 2 + (v / n.b) ** 2) / outline
        window = best[y0:y1, x0:x1]
        closer = (distance < 1) & (distance < window)
        window[closer] = distance[closer]
        owner[y0:y1, x0:x1][closer] = index
    ids, labels = np.unique(owner, return_inverse=True)
    labels = labels.reshape(shape)
    if ids[0] != 0:
        labels += 1
    profile = np.where(labels > 0, 1 - 0.25 * np.minimum(best, 1) ** 2, 0.0)
    return labels.astype(np.uint16), profile


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A smooth non-negative field in [0, 1]: a random tilt plus a few broad random bumps."""
    yy, xx = np.mgrid[: shape[0], : shape[1]] / np.array(shape, float).reshape(2, 1, 1)
    tilt = rng.uniform(-1, 1) * yy + rng.uniform(-1, 1) * xx
    coarse = rng.normal(size=(4, 4))
    bumps = ndi.zoom(coarse, (shape[0] / 4, shape[1] / 4), order=3, mode="nearest")[
        : shape[0], : shape[1]
    ]
    field = tilt + 0.5 * bumps
    field -= field.min()
    return field / max(float(field.max()), 1e-12)
