"""Host pipeline throughput: the tile engine around a null network, beside a bare copy of its plan.

What the engine costs on the host, apart from the network: each configuration predicts a
uint16 image with the bundled model's geometry (depth 4, 'same', 3 classes, exact halo, its
default tile plan) but with the network's forward pass replaced by zeros of the right shape
(a *null network*), so what is timed is reading and mirror-padding the windows, normalising,
the hand-over to torch, softmax / arg-max, cropping and writing the result. Beside it, as the
physical reference, a **bare copy** of the same plan: for every tile, read its window (mirror
padded, :func:`~napari_tiled_unet.tiling.stitch.read_tile`) and write its valid centre into an
output array, nothing else.

Sources: a ``--size`` x ``--size`` uint16 array in memory and a ``--tiff-size`` x
``--tiff-size`` uint16 TIFF on disk (uncompressed, so it is read through a memory map, as
:func:`~napari_tiled_unet.io.tiff.open_tiff` opens it), both the bundled sample mirror-tiled.
Results go to a numpy array in memory (labels uint8; probabilities float32, a leading class
axis).

With ``--reference-src DIR`` (a ``src`` folder of another checkout, e.g. the commit before a
change, exported with ``git archive``) every engine configuration also runs with that code,
in the same run, so the ratio "this / reference" is free of the machine's load; with
``--real-size N`` the real bundled network predicts an N x N crop with both, for a
no-regression ratio of the whole prediction.

Every configuration runs in its own child process (this script with a hidden ``--one``),
``PYTHONPATH`` pointing at this checkout's ``src`` or the reference. Mpx/s = image pixels /
wall seconds, best of ``--repeat`` runs after one warm-up run on a 512 px crop. Not a test: it
prints a markdown report on stdout; compare ratios from one run, not absolute figures. Beside
the wall time it reports the process's CPU time (all threads, ``time.process_time``): on a
machine shared with other jobs, image Mpx per CPU second moves less with their load.

Usage::

    python benchmarks/pipeline_throughput.py                       # 4096² array, 8192² TIFF
    python benchmarks/pipeline_throughput.py --reference-src /tmp/base/src --real-size 2048
    python benchmarks/pipeline_throughput.py --size 2048 --tiff-size 0 --batch-sizes 1 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(HERE))
from predict_throughput import cpu_model, make_image, usable_cores  # noqa: E402


@dataclass
class Case:
    """One measured configuration (what the parent hands a child, as JSON)."""

    method: str  # "copy" (bare read + write of the plan), "null" or "real" (network)
    source: str  # "array" or "tiff"
    output: str = "labels"
    batch: int = 1
    code: str = "this"  # "this" or "reference"

    def label(self) -> str:
        if self.method == "copy":
            return f"bare copy ({self.source})"
        net = "null network" if self.method == "null" else "real network"
        code = "" if self.code == "this" else " [reference]"
        return f"{net}, {self.output}, batch {self.batch} ({self.source}){code}"


# --------------------------------------------------------------------------------------------
# Child process
# --------------------------------------------------------------------------------------------


def null_network():
    """The bundled model with its forward pass replaced by zeros of the output's shape."""
    import torch

    from napari_tiled_unet.model.modelfile import default_model_path, load_model

    net = load_model(default_model_path())
    classes = net.config.num_classes

    def forward(x):  # 'same' network: the output has the input's spatial shape
        return torch.zeros((x.shape[0], classes, *x.shape[2:]), dtype=torch.float32)

    net.forward = forward
    return net


def open_source(spec: dict):
    if spec["case"]["source"] == "tiff":
        from napari_tiled_unet.io.tiff import open_tiff

        return open_tiff(spec["tiff"])
    return np.load(spec["array"])


def bare_copy(image, net) -> np.ndarray:
    """Read every tile's window of the default plan and write its valid centre: the reference."""
    from napari_tiled_unet.planning import plan_for
    from napari_tiled_unet.tiling.stitch import read_tile

    plan = plan_for(image.shape, net)
    out = np.zeros(image.shape, image.dtype)
    channels = image[None]
    for tile in plan:
        out[tile.write] = read_tile(channels, tile)[(0, *tile.crop)]
    return out


def run_one(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    case = Case(**spec["case"])
    import torch

    from napari_tiled_unet._malloc import keep_freed_memory

    keep_freed_memory()  # as the command line does

    from napari_tiled_unet.inference import predict

    if case.method == "real":
        from napari_tiled_unet.model.modelfile import default_model_path, load_model

        net = load_model(default_model_path())
    else:
        net = null_network()
    image = open_source(spec)
    if case.method == "real":
        image = np.ascontiguousarray(image[: spec["real_size"], : spec["real_size"]])

    def run(img):
        if case.method == "copy":
            return bare_copy(img, net)
        return predict(img, net, output=case.output, device="cpu", batch_size=case.batch)

    run(np.ascontiguousarray(image[:512, :512]))  # warm-up: imports, allocator, kernels
    times, cpu, result = [], [], None
    for _ in range(spec["repeat"]):
        result = None
        start, start_cpu = time.perf_counter(), time.process_time()
        result = run(image)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    checksum = None
    if case.method == "real":
        np.save(spec["result"] + ".npy", np.asarray(result))
    elif case.method == "null":
        checksum = float(np.asarray(result, np.float64).sum())
    report = {
        "times": times,
        "cpu": cpu,
        "pixels": int(np.prod(image.shape)),
        "dtype": str(result.dtype),
        "shape": list(result.shape),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "checksum": checksum,
    }
    Path(spec["result"]).write_text(json.dumps(report))


# --------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------


def run_child(case: Case, common: dict, workdir: Path, index: int, src: Path) -> dict:
    spec_path = workdir / f"spec_{index}.json"
    result = workdir / f"result_{index}.json"
    spec_path.write_text(json.dumps({**common, "case": asdict(case), "result": str(result)}))
    env = dict(os.environ, PYTHONPATH=str(src))
    command = [sys.executable, str(Path(__file__).resolve()), "--one", str(spec_path)]
    done = subprocess.run(command, env=env, stdout=sys.stderr, check=False)
    if done.returncode != 0 or not result.exists():
        return {"error": f"child failed (exit status {done.returncode})"}
    return json.loads(result.read_text())


def mpx(res: dict) -> float:
    return res["pixels"] / min(res["times"]) / 1e6


def mpx_cpu(res: dict) -> float:
    """Image Mpx per CPU second (all threads of the process), of the least costly run."""
    return res["pixels"] / min(res["cpu"]) / 1e6


def report(rows: list[tuple[Case, dict]], args, command: str, workdir: Path) -> str:
    first = next((r for _, r in rows if "torch" in r), {})
    lines = [
        f"command: `{command}`",
        "",
        f"- machine: {cpu_model()}, {usable_cores()} usable cores, "
        f"{platform.system()} {platform.machine()}; Python {platform.python_version()}, "
        f"torch {first.get('torch')} ({first.get('threads')} threads), numpy {np.__version__}",
        "- network: the bundled model's geometry (depth 4, 'same', 3 classes, its exact halo: 112 px here, "
        "107 px in trees before the halo was rounded to the pooling grid; "
        "default tile plan); *null network*: its forward pass replaced by zeros of the "
        "output's shape",
        f"- sources: {args.size}² uint16 array in memory"
        + (
            f"; {args.tiff_size}² uint16 uncompressed TIFF (memory-mapped)"
            if args.tiff_size
            else ""
        )
        + f"; results to numpy in memory; best of {args.repeat} after a warm-up; glibc keeps "
        "freed memory (as the command line sets it)",
        *(
            [f"- reference: `{args.reference_src}` (the same benchmark, that code, same run)"]
            if args.reference_src
            else []
        ),
        "",
        "| configuration | result | seconds | Mpx/s | / bare copy | CPU s | Mpx per CPU s |"
        + (" Mpx/s / reference |" if args.reference_src else ""),
        "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if args.reference_src else ""),
    ]
    copies = {c.source: r for c, r in rows if c.method == "copy" and "times" in r}
    by_key = {(c.method, c.source, c.output, c.batch, c.code): r for c, r in rows}
    for case, res in rows:
        if "times" not in res:
            lines.append(f"| {case.label()} | {res.get('error')} | | | | | |")
            continue
        copy = copies.get(case.source)
        vs_copy = f"{mpx(res) / mpx(copy):.4f}" if copy and case.method != "copy" else "-"
        cells = [
            case.label(),
            f"{res['dtype']} {tuple(res['shape'])}",
            f"{min(res['times']):.2f}",
            f"{mpx(res):.2f}",
            vs_copy,
            f"{min(res['cpu']):.2f}",
            f"{mpx_cpu(res):.2f}",
        ]
        if args.reference_src:
            ref = by_key.get((case.method, case.source, case.output, case.batch, "reference"))
            ok = case.code == "this" and case.method != "copy" and ref and "times" in ref
            cells.append(f"{mpx(res) / mpx(ref):.2f}" if ok else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if args.reference_src and args.real_size:
        this = workdir / "real_this.json.npy"
        ref = workdir / "real_reference.json.npy"
        if this.exists() and ref.exists():
            a, b = np.load(this), np.load(ref)
            same = "identical" if np.array_equal(a, b) else f"{np.mean(a != b):.2e} differ"
            lines += ["", f"- real network labels, this vs reference: {same}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "benchmarks/pipeline_throughput.py", *argv])
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--size", type=int, default=4096, help="in-memory image edge, px")
    parser.add_argument("--tiff-size", type=int, default=8192, help="TIFF edge, px (0: none)")
    parser.add_argument(
        "--outputs", nargs="+", default=["labels", "probabilities"], help="engine outputs"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1], help="batch sizes")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per configuration")
    parser.add_argument(
        "--reference-src", type=Path, help="another checkout's src folder to compare with"
    )
    parser.add_argument(
        "--real-size", type=int, default=0, help="real network on a crop of this edge (0: none)"
    )
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        run_one(args.one)
        return 0
    codes = [("this", SRC)] + ([("reference", args.reference_src)] if args.reference_src else [])
    sources = ["array"] + (["tiff"] if args.tiff_size else [])
    cases = []
    for source in sources:
        cases.append((Case("copy", source), SRC))
        for output in args.outputs:
            for batch in args.batch_sizes:
                for code, src in codes:
                    cases.append((Case("null", source, output, batch, code), src))
    if args.real_size:
        for code, src in codes:
            cases.append((Case("real", "array", "labels", 1, code), src))
    with tempfile.TemporaryDirectory(prefix="pipeline_throughput_") as tmp:
        workdir = Path(tmp)
        np.save(workdir / "image.npy", make_image(args.size))
        common = {
            "array": str(workdir / "image.npy"),
            "tiff": str(workdir / "image.tif"),
            "repeat": args.repeat,
            "real_size": args.real_size,
        }
        if args.tiff_size:
            import tifffile

            tifffile.imwrite(workdir / "image.tif", make_image(args.tiff_size))
        rows = []
        for index, (case, src) in enumerate(cases):
            print(f"running {case.label()} ...", file=sys.stderr, flush=True)
            res = run_child(case, common, workdir, index, src)
            if case.method == "real":
                saved = workdir / f"result_{index}.json.npy"
                if saved.exists():
                    saved.rename(workdir / f"real_{case.code}.json.npy")
            if "times" in res:
                print(f"  {min(res['times']):.2f} s, {mpx(res):.2f} Mpx/s", file=sys.stderr)
            rows.append((case, res))
        print(report(rows, args, command, workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
