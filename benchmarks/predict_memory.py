"""Peak memory and speed of ``napari-tiled-unet predict`` on uint16 TIFFs of growing size.

The claim to check: prediction memory is set by the tile, not by the image. For each size
(``--sizes-gib``, default 0.25, 1 and 4 GiB) and TIFF layout this script

1. makes a uint16 TIFF of about that size in ``--workdir`` (reused when a file of the right
   shape and layout is there already), streaming it strip by strip or tile by tile, never
   holding the image in memory. The pixels are the bundled sample image (``nuclei.tif``, real
   nuclei) tiled as a mirror pattern (every other copy flipped, so there are no seams), not
   noise. Layouts: ``contiguous`` (uncompressed, contiguous strips: the engine memory-maps it)
   and ``tiled`` (512 x 512 tiles, zlib or zstd, BigTIFF: read through tifffile's zarr store);
2. runs the real command line, ``napari-tiled-unet predict IN -o OUT --device cpu ...``, in a
   child process; samples the child's resident memory once a second (``--interval``) from
   ``/proc/PID/status`` (VmRSS, split into RssAnon = heap/arrays, RssFile = mapped files such
   as a memory-mapped input, RssShmem) into a CSV in the workdir, so a plateau can be shown;
   and takes the child's own peak RSS from ``os.wait4`` (``ru_maxrss``, KiB on Linux);
3. checks the output is complete (a TIFF or zarr of the input's shape whose last tile reads);
4. prints the machine, the command lines and a markdown table: size, layout, peak RSS, its
   growth over the smallest size of the same layout, RssAnon/RssFile at the sampled peak,
   Mpx/s and wall time (the wall time includes start-up: importing torch, loading the model).

A read-only memory map keeps every page it has touched resident until memory is short, so
for the contiguous layout RssFile can grow with the image even when the engine itself holds
only a tile; RssAnon is what the engine allocates. The kernel drops such clean file pages
when memory runs short, but they are counted in RSS (and in cgroup limits) until then.

Not a test: it prints numbers. Generated inputs and outputs are deleted afterwards unless
``--keep`` is given (inputs that were already there are left alone).

Usage::

    python benchmarks/predict_memory.py                                  # 0.25, 1, 4 GiB
    python benchmarks/predict_memory.py --sizes-gib 0.01 0.04            # a quick trial
    python benchmarks/predict_memory.py --layout contiguous tiled --keep
    python benchmarks/predict_memory.py --extra "--tile 512 --batch 2 --kind labels"
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

SAMPLE = Path(__file__).resolve().parents[1] / "src/napari_tiled_unet/sample_data/nuclei.tif"
GRID = 512  # image edges are multiples of this (and of the 512 px TIFF tiles)
MIB = 2**20


# -- input images -------------------------------------------------------------------------


def shape_for(gib: float) -> tuple[int, int]:
    """A square-ish (Y, X) of about ``gib`` GiB of uint16, both edges multiples of GRID."""
    pixels = gib * 2**30 / 2
    height = max(GRID, round(math.sqrt(pixels) / GRID) * GRID)
    width = max(GRID, math.ceil(pixels / height / GRID) * GRID)
    return height, width


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """Indices into a length-n axis for a mirror-tiled axis: 0..n-1, n-1..0, 0..n-1, ..."""
    k = index % (2 * n)
    return np.where(k < n, k, 2 * n - 1 - k)


class MirrorTiled:
    """The sample image mirror-tiled to ``shape``; computes any row band on demand."""

    def __init__(self, sample: np.ndarray, shape: tuple[int, int]):
        self.sample = sample
        self.shape = shape
        self.cols = _mirror(np.arange(shape[1]), sample.shape[1])

    def rows(self, y0: int, y1: int) -> np.ndarray:
        rows = _mirror(np.arange(y0, min(y1, self.shape[0])), self.sample.shape[0])
        return self.sample[rows[:, None], self.cols[None, :]]


def _strips(image: MirrorTiled, rows: int):
    for y in range(0, image.shape[0], rows):
        yield np.ascontiguousarray(image.rows(y, y + rows)).tobytes()


def _tiles(image: MirrorTiled, tile: int):
    for y in range(0, image.shape[0], tile):
        band = image.rows(y, y + tile)
        for x in range(0, image.shape[1], tile):
            yield np.ascontiguousarray(band[:, x : x + tile])


def _layout_ok(path: Path, shape: tuple[int, int], layout: str) -> bool:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            page = series.pages[0]
            if tuple(series.shape) != shape or series.dtype != np.uint16:
                return False
            if layout == "contiguous":
                return page.is_contiguous and not page.is_tiled and page.compression == 1
            return page.is_tiled and page.compression != 1
    except Exception:
        return False


def make_input(
    workdir: Path, gib: float, layout: str, compression: str
) -> tuple[Path, tuple[int, int], bool]:
    """(path, shape, whether it was made now) of the input TIFF for ``gib`` and ``layout``."""
    shape = shape_for(gib)
    suffix = "" if layout == "contiguous" else f"_{compression}"
    path = workdir / f"nuclei_{shape[0]}x{shape[1]}_{layout}{suffix}.tif"
    if path.exists() and _layout_ok(path, shape, layout):
        print(f"reusing {path}", flush=True)
        return path, shape, False
    nbytes = shape[0] * shape[1] * 2
    free = shutil.disk_usage(workdir).free
    if free < nbytes * 1.2:
        sys.exit(
            f"not enough disk space in {workdir}: {nbytes / 2**30:.2f} GiB needed, {free / 2**30:.2f} GiB free"
        )
    image = MirrorTiled(tifffile.imread(SAMPLE), shape)
    tmp = path.with_name(f".{path.name}.tmp")
    start = time.perf_counter()
    print(
        f"writing {path} ({shape[0]} x {shape[1]} uint16, {nbytes / 2**30:.2f} GiB, {layout})",
        flush=True,
    )
    common = dict(shape=shape, dtype=np.uint16, photometric="minisblack", metadata={"axes": "YX"})
    if layout == "contiguous":
        rows = max(1, (16 * MIB) // (shape[1] * 2))  # strips of about 16 MiB
        tifffile.imwrite(
            tmp, _strips(image, rows), rowsperstrip=rows, bigtiff=nbytes > 2**31, **common
        )
    else:
        tifffile.imwrite(
            tmp,
            _tiles(image, 512),
            tile=(512, 512),
            compression=compression,
            bigtiff=True,
            maxworkers=os.cpu_count(),
            **common,
        )
    os.replace(tmp, path)
    print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
    return path, shape, True


# -- running and measuring the command line -----------------------------------------------


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of ``pid`` in bytes (empty once it is gone)."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    fields[key] = int(value.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return fields


def _rss_fallback(pid: int) -> dict[str, int]:
    """Where /proc/PID/status lacks the split (not Linux): psutil's rss only."""
    import psutil

    try:
        return {"VmRSS": psutil.Process(pid).memory_info().rss}
    except psutil.Error:
        return {}


def cli_command() -> list[str]:
    exe = Path(sys.executable).with_name("napari-tiled-unet")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("napari-tiled-unet")
    return [found] if found else [sys.executable, "-m", "napari_tiled_unet.cli"]


def run_predict(command: list[str], csv_path: Path, log_path: Path, interval: float) -> dict:
    """Run ``command``; sample its memory into ``csv_path``; return peak figures and timing."""
    peak = {"VmRSS": 0}
    with open(log_path, "w") as log, open(csv_path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["t_s", "rss_mib", "anon_mib", "file_mib", "shmem_mib"])
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            fields = _proc_status(child.pid) or _rss_fallback(child.pid)
            if fields:
                writer.writerow(
                    [f"{time.perf_counter() - start:.1f}"]
                    + [
                        f"{fields[k] / MIB:.1f}" if k in fields else ""
                        for k in ("VmRSS", "RssAnon", "RssFile", "RssShmem")
                    ]
                )
                out.flush()
                if fields.get("VmRSS", 0) >= peak["VmRSS"]:
                    peak = fields
            time.sleep(interval)  # the child's exit is noticed within one interval
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 above
    return {
        "returncode": child.returncode,
        "wall_s": wall,
        "maxrss_mib": usage.ru_maxrss * 1024 / MIB,  # KiB on Linux
        "sampled": peak,
    }


def check_output(path: Path, shape: tuple[int, int]) -> str:
    """'ok', or what is wrong with the output at ``path``."""
    if not path.exists():
        return "missing"
    try:
        if path.suffix == ".zarr":
            import zarr

            array = zarr.open_array(str(path), mode="r")
        else:
            with tifffile.TiffFile(path) as tif:
                if tuple(tif.series[0].shape) != shape:
                    return f"shape {tif.series[0].shape}"
            import zarr

            array = zarr.open_array(tifffile.imread(path, aszarr=True), mode="r")
        if tuple(array.shape) != shape:
            return f"shape {array.shape}"
        np.asarray(array[-GRID:, -GRID:])  # the last tile is written and decodes
    except Exception as err:  # report, don't stop the benchmark
        return f"unreadable ({err})"
    return "ok"


def machine() -> list[str]:
    import psutil
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return [
        f"- CPU: {cpu}, {psutil.cpu_count(logical=False)} cores / {os.cpu_count()} threads"
        + (f", {len(os.sched_getaffinity(0))} usable" if hasattr(os, "sched_getaffinity") else ""),
        f"- RAM: {psutil.virtual_memory().total / 2**30:.1f} GiB",
        f"- Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {np.__version__}, tifffile {tifffile.__version__}",
        f"- OS: {platform.platform()}",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-gib", type=float, nargs="+", default=[0.25, 1, 4])
    parser.add_argument(
        "--layout", nargs="+", choices=("contiguous", "tiled"), default=["contiguous"]
    )
    parser.add_argument(
        "--compression", choices=("zlib", "zstd"), default="zlib", help="of the tiled layout"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "napari-tiled-unet-predict-memory",
    )
    parser.add_argument("--keep", action="store_true", help="keep generated inputs and outputs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output-format", choices=("tif", "zarr"), default="tif")
    parser.add_argument(
        "--extra",
        default="",
        help='more predict options, e.g. "--tile 512 --batch 2 --kind labels --model M.pt"',
    )
    parser.add_argument("--interval", type=float, default=1.0, help="RSS sampling period (s)")
    args = parser.parse_args(argv)
    if args.compression == "zstd" and "tiled" in args.layout:
        try:
            import imagecodecs  # noqa: F401
        except ImportError:
            parser.error("zstd needs imagecodecs (pip install imagecodecs); or use zlib")
    args.workdir.mkdir(parents=True, exist_ok=True)

    print("## Machine\n")
    print("\n".join(machine()), flush=True)
    print()
    rows = []
    for layout in args.layout:
        for gib in sorted(args.sizes_gib):
            path, shape, made = make_input(args.workdir, gib, layout, args.compression)
            out = args.workdir / f"{path.stem}_labels.{args.output_format}"
            if out.is_dir():
                shutil.rmtree(out)
            else:
                out.unlink(missing_ok=True)
            command = [
                *cli_command(),
                "predict",
                str(path),
                "-o",
                str(out),
                "--device",
                args.device,
                *shlex.split(args.extra),
            ]
            print(f"$ {shlex.join(command)}", flush=True)
            csv_path = args.workdir / f"rss_{path.stem}.csv"
            log_path = args.workdir / f"log_{path.stem}.txt"
            result = run_predict(command, csv_path, log_path, args.interval)
            verdict = check_output(out, shape) if result["returncode"] == 0 else "failed"
            if result["returncode"] != 0:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                print(f"  exit code {result['returncode']}:\n    " + "\n    ".join(tail))
            sampled = result["sampled"]
            print(
                f"  peak RSS {result['maxrss_mib']:.0f} MiB, {result['wall_s']:.1f} s, "
                f"output {verdict}; samples in {csv_path}",
                flush=True,
            )
            rows.append(
                dict(
                    layout=layout,
                    gib=shape[0] * shape[1] * 2 / 2**30,
                    shape=shape,
                    peak=result["maxrss_mib"],
                    anon=sampled.get("RssAnon", float("nan")) / MIB,
                    file=sampled.get("RssFile", float("nan")) / MIB,
                    mpxs=shape[0] * shape[1] / 1e6 / result["wall_s"],
                    wall=result["wall_s"],
                    output=verdict,
                )
            )
            if not args.keep:
                if out.is_dir():
                    shutil.rmtree(out, ignore_errors=True)
                else:
                    out.unlink(missing_ok=True)
                if made:
                    path.unlink(missing_ok=True)

    print("\n## Peak resident memory of `napari-tiled-unet predict`\n")
    extra = f" {args.extra}" if args.extra else ""
    print(
        f"Command: `napari-tiled-unet predict IN -o OUT.{args.output_format} --device {args.device}{extra}`\n"
    )
    print(
        "| image (GiB) | pixels (Y x X) | layout | peak RSS (MiB) | growth vs smallest |"
        " RssAnon at peak (MiB) | RssFile at peak (MiB) | Mpx/s | wall (s) | output |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        base = next(r for r in rows if r["layout"] == row["layout"])  # smallest: sizes sorted
        growth = (row["peak"] / base["peak"] - 1) * 100
        print(
            f"| {row['gib']:.3g} | {row['shape'][0]} x {row['shape'][1]} | {row['layout']} "
            f"| {row['peak']:.0f} | {growth:+.1f}% | {row['anon']:.0f} | {row['file']:.0f} "
            f"| {row['mpxs']:.2f} | {row['wall']:.1f} | {row['output']} |"
        )
    print(
        "\nPeak RSS: the child's ru_maxrss from os.wait4. RssAnon/RssFile: from /proc/PID/status"
        f" at the largest sampled VmRSS (every {args.interval:g} s; the sample CSVs are in"
        f" {args.workdir})."
    )
    return 0 if all(r["output"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
