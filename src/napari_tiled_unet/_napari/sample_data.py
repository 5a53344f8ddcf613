"""Sample data for File ▸ Open Sample ▸ Tiled U-Net: an image and its labels, read lazily on demand.

The files live in ``napari_tiled_unet/sample_data/``; see the README there for where the real
data come from and under which licence.
"""

from __future__ import annotations

from pathlib import Path

import tifffile

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"


def _image_and_labels(stem: str, title: str) -> list[tuple]:
    image_path = SAMPLE_DIR / f"{stem}.tif"
    labels_path = SAMPLE_DIR / f"{stem}_labels.tif"
    if not image_path.is_file():
        raise FileNotFoundError(
            f"The sample image {image_path} is missing from this installation of "
            "napari-tiled-unet; reinstall the package to get it back."
        )
    image = tifffile.imread(image_path)
    layers = [(image, {"name": title, "metadata": {"source": str(image_path)}}, "image")]
    if labels_path.is_file():
        labels = tifffile.imread(labels_path)
        meta = {"name": f"{title} reference masks", "metadata": {"source": str(labels_path)}}
        layers.append((labels, meta, "labels"))
    return layers


def nuclei() -> list[tuple]:
    """HeLa nuclei (Cell Tracking Challenge Fluo-N2DL-HeLa), 608x1020 uint16, with instance labels.

    Returns
    -------
    list of LayerData tuples
        An image layer ``"nuclei"`` and a labels layer ``"nuclei labels"``.
    """
    return _image_and_labels("nuclei", "nuclei")


def synthetic_nuclei() -> list[tuple]:
    """Synthetic nuclei: blurred discs on a noisy background, 256x256 uint16, with instance labels.

    Made by ``benchmarks/make_synthetic_sample.py`` (seeded); not real data.

    Returns
    -------
    list of LayerData tuples
        An image layer ``"synthetic nuclei"`` and a labels layer ``"synthetic nuclei labels"``.
    """
    return _image_and_labels("synthetic_nuclei", "synthetic nuclei")
