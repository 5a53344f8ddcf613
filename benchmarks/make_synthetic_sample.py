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

from napari_tiled_unet.training.synthetic import SAMPLE_SEED, blurred_discs

SHAPE = (256, 256)
SEED = SAMPLE_SEED  # 2015, the year of the U-Net paper
OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "napari_tiled_unet" / "sample_data"


def make_sample(shape: tuple[int, int] = SHAPE, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image, labels)``: a uint16 image of blurred discs and their uint16 instance ids.

    The generator lives in the package
    (:func:`napari_tiled_unet.training.synthetic.blurred_discs`); see its docstring.
    """
    return blurred_discs(shape, seed)


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
