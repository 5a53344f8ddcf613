"""Write the synthetic nuclei sample shipped with the plugin (File ▸ Open Sample ▸ Synthetic nuclei).

Blurred bright discs of random size and brightness on an uneven, noisy background, with their
instance labels. Seeded, so running it again reproduces the shipped files byte for byte::

    python benchmarks/make_synthetic_sample.py

writes ``src/napari_tiled_unet/sample_data/synthetic_nuclei.tif`` (uint16, 256x256) and
``synthetic_nuclei_labels.tif`` (uint16 instance ids, 0 = background).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

SHAPE = (256, 256)
SEED = 2015  # the year of the U-Net paper
OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "napari_tiled_unet" / "sample_data"


def make_sample(shape: tuple[int, int] = SHAPE, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image, labels)``: a uint16 image of blurred discs and their uint16 instance ids.

    Discs (radius 6-13 px) are placed without overlap; each has its own brightness. The image is
    blurred (sigma 1.5 px), put on a smooth background gradient and given Poisson and Gaussian
    noise, roughly like a widefield nuclear stain.
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
        grown = ndimage.binary_dilation(disc, iterations=2)
        if labels[grown].any():
            continue
        n += 1
        labels[disc] = n
        signal[disc] = rng.uniform(600, 1800)
        if n == 40:
            break
    signal = ndimage.gaussian_filter(signal, 1.5)
    background = 200 + 80 * (yy / shape[0]) + 40 * np.sin(xx / shape[1] * np.pi)
    image = rng.poisson(signal + background) + rng.normal(0, 15, shape)
    return np.clip(image, 0, 65535).astype(np.uint16), labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    image, labels = make_sample()
    note = "Synthetic nuclei (not real data), made by benchmarks/make_synthetic_sample.py, seed {}."
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(
        args.out_dir / "synthetic_nuclei.tif",
        image,
        description=note.format(SEED),
        compression="zlib",
    )
    tifffile.imwrite(
        args.out_dir / "synthetic_nuclei_labels.tif",
        labels,
        description=note.format(SEED) + " Instance labels, 0 = background.",
        compression="zlib",
    )


if __name__ == "__main__":
    main()
