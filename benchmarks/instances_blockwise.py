"""Speed and memory of the blockwise instance labeller against the in-memory one.

The class map is the reference mask ``sample_data/nuclei_labels.tif`` (608 x 1020 px, 177
nuclei) turned into background / interior / boundary classes
(:func:`napari_tiled_unet.training.targets.instance_targets`) and tiled to ``--size`` pixels
square (default 8192: about 19,000 objects). It is written once to a zarr store (256 x 256
chunks, as the engine's temporary class map); then each mode runs in a fresh child process:

- ``blockwise-zarr``: ``iter_instances_blockwise(zarr classes, zarr int32 out)``, both on disk
  (the CLI / ``iter_predict_to_file`` case);
- ``blockwise-numpy``: the same with both arrays in memory (the labeller's own speed);
- ``in-memory``: :func:`napari_tiled_unet.postprocess.instances_from_classes` on the numpy
  class map.

Each child reports wall seconds, Mpx/s, its resident memory before the labeller starts (inputs
loaded) and its high-water mark (``VmHWM``), and the tracemalloc peak of a second run (numpy
allocations only; tracemalloc slows the run, so it is timed apart). The results of all modes
are checked to be equal.

    python benchmarks/instances_blockwise.py [--size 8192] [--block 1024] [--modes ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

MODES = ("blockwise-zarr", "blockwise-numpy", "in-memory")


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # MiB
    return float("nan")


def make_classes(size: int) -> np.ndarray:
    import tifffile

    from napari_tiled_unet.model.modelfile import default_model_path
    from napari_tiled_unet.training.targets import instance_targets

    tile = instance_targets(tifffile.imread(default_model_path().parent / "nuclei_labels.tif"))
    reps = (-(-size // tile.shape[0]), -(-size // tile.shape[1]))
    return np.ascontiguousarray(np.tile(tile, reps)[:size, :size])


def run_one(mode: str, folder: Path, block: int) -> dict:
    import zarr

    from napari_tiled_unet.events import run_to_completion
    from napari_tiled_unet.instances_blockwise import iter_instances_blockwise
    from napari_tiled_unet.postprocess import instances_from_classes

    stored = zarr.open_array(str(folder / "classes.zarr"), mode="r")
    shape = stored.shape

    def prepare():
        if mode == "blockwise-zarr":
            out = zarr.create_array(
                store=str(folder / f"out-{mode}.zarr"),
                shape=shape,
                dtype=np.int32,
                chunks=(256, 256),
                fill_value=0,
                overwrite=True,
            )
            return stored, out
        classes = stored[...]
        return classes, (np.zeros(shape, np.int32) if mode == "blockwise-numpy" else None)

    def run(classes, out):
        if mode == "in-memory":
            return instances_from_classes(classes)
        return run_to_completion(iter_instances_blockwise(classes, out, block=block))

    classes, out = prepare()
    before = _status("VmRSS")
    start = time.perf_counter()
    result = run(classes, out)
    seconds = time.perf_counter() - start
    hwm = _status("VmHWM")
    np.save(folder / f"result-{mode}.npy", np.asarray(result[...]))
    del result, classes, out
    classes, out = prepare()
    tracemalloc.start()
    run(classes, out)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "mode": mode,
        "seconds": round(seconds, 2),
        "Mpx/s": round(shape[0] * shape[1] / 1e6 / seconds, 2),
        "rss_before_MiB": round(before),
        "hwm_MiB": round(hwm),
        "tracemalloc_peak_MiB": round(peak / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, Path(args.folder), args.block)))
        return
    import zarr

    with tempfile.TemporaryDirectory(dir=".") as tmp:
        classes = make_classes(args.size)
        stored = zarr.create_array(
            store=str(Path(tmp) / "classes.zarr"),
            shape=classes.shape,
            dtype=np.uint8,
            chunks=(256, 256),
            fill_value=0,
        )
        stored[...] = classes
        print(f"class map {classes.shape}, {(classes > 0).mean():.1%} foreground")
        del classes
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--one", mode, "--folder", tmp]
            cmd += ["--block", str(args.block)]
            print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())
        results = [np.load(Path(tmp) / f"result-{m}.npy", mmap_mode="r") for m in args.modes]
        same = all(np.array_equal(results[0], r) for r in results[1:])
        print(f"objects: {int(results[0].max())}; all modes equal: {same}")


if __name__ == "__main__":
    main()
