"""What measuring each image's object size costs (``InstanceOptions.for_image``), beside the
network's prediction of the same image, for the bundled model.

Times are measured side by side in one run; only their ratios mean much on a shared machine.
Usage: python benchmarks/object_size_cost.py [--out benchmarks/results/object_size_cost.md]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_tiled_unet import load_model, predict
from napari_tiled_unet.model.modelfile import default_model_path
from napari_tiled_unet.separation import InstanceOptions

SAMPLE = default_model_path().parent


def images() -> dict[str, np.ndarray]:
    hela = tifffile.imread(SAMPLE / "nuclei.tif")
    cho = tifffile.imread(sorted((SAMPLE / "sources" / "cho").glob("*[0-9].tif"))[0])
    return {
        "HeLa sample (nuclei ~27 px)": hela,
        "HeLa sample tiled to 1024 x 1020": np.tile(hela, (2, 1))[:1024],
        "CHO plane (nuclei ~70 px)": cho,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model = load_model(default_model_path())
    options = InstanceOptions.for_model(model.info)
    lines = [
        "| image | shape | network (probabilities) | object size measured | measured diameter |",
        "|---|---|---:|---:|---:|",
    ]
    for name, image in images().items():
        start = time.perf_counter()
        probabilities = predict(image, model, output="probabilities", device="cpu")
        network = time.perf_counter() - start
        classes = probabilities.argmax(0).astype(np.uint8)
        start = time.perf_counter()
        fitted = options.for_image(classes)
        measure = time.perf_counter() - start
        lines.append(
            f"| {name} | {image.shape} | {network:.2f} s | {measure:.2f} s "
            f"({measure / network:.2f}x) | {fitted.diameter:.1f} px |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(
            "# Cost of measuring the object size per image (bundled model, CPU)\n\n"
            "`python benchmarks/object_size_cost.py --out benchmarks/results/object_size_cost.md`"
            "\n\n" + text
        )


if __name__ == "__main__":
    main()
