"""3D prediction: throughput against MONAI, and a Z-stack larger than the memory it may use.

Two parts, on one 3D U-Net (random weights, seed 0, the package's percentile normalisation;
``--base``, ``--depth``, ``--anisotropic-levels``) saved once to the work folder:

1. **Throughput** (Mvoxel/s, peak RSS, deviation from the whole-volume pass):
   ``predict_throughput.py`` run on a ``--shape`` Z-stack made from the bundled sample
   (:func:`predict_throughput.make_volume`), comparing our overlap-tile engine (default tile,
   and ``--tiles``) with MONAI's ``sliding_window_inference`` (roi ``--roi`` cubed, overlap
   0.25, Gaussian, ``sw_batch_size`` 4) and one forward pass over the whole volume. Each
   configuration runs in its own child process; see that script for what is measured.
2. **Larger than memory**: a uint16 ZYX TIFF of ``--big-gib`` GiB (written plane by plane,
   never held in memory) is predicted by the real command line,
   ``napari-tiled-unet predict BIG.tif -o OUT.tif --model M.pt --axes ZYX --kind labels``,
   inside a Linux memory cgroup (v1 or v2) limited to ``--memory-limit-mib``, less than the
   volume itself: the run finishes only if the engine streams. Resident memory is sampled as
   in ``predict_memory.py``. Needs root for the cgroup; without it, the run is unlimited and
   the report says so.

Not a test: it prints numbers (markdown) to stdout, progress to stderr. MONAI is a
benchmark-only dependency (``pip install monai``).

Usage::

    python benchmarks/predict_3d.py                                   # defaults below
    python benchmarks/predict_3d.py --shape 32 256 256 --big-gib 0.1 --memory-limit-mib 200
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import predict_memory
import predict_throughput

MIB = 2**20


def make_model(path: Path, base: int, depth: int, anisotropic_levels: int) -> Path:
    """A random 3D U-Net (seed 0) with percentile normalisation, saved to ``path``."""
    import torch

    from napari_tiled_unet import Normalization, UNet, save_model

    torch.manual_seed(0)
    net = UNet(
        1,
        3,
        depth=depth,
        base_channels=base,
        ndim=3,
        anisotropic_levels=anisotropic_levels,
    )
    return save_model(net.eval(), path, normalization=Normalization().to_dict())


def write_stack(path: Path, gib: float, edge: int) -> tuple[int, int, int]:
    """A ZYX uint16 TIFF of about ``gib`` GiB: ``edge`` x ``edge`` planes, written one by one."""
    planes = max(1, round(gib * 2**30 / (2 * edge * edge)))
    shape = (planes, edge, edge)
    if path.exists():
        with tifffile.TiffFile(path) as tif:
            if tuple(tif.series[0].shape) == shape:
                print(f"reusing {path}", file=sys.stderr, flush=True)
                return shape
    tall = predict_memory.MirrorTiled(
        tifffile.imread(predict_throughput.SAMPLE_IMAGE), (edge + 3 * planes, edge)
    )

    def planes_iter():
        for z in range(planes):
            yield np.ascontiguousarray(tall.rows(3 * z, 3 * z + edge))

    tmp = path.with_name(f".{path.name}.tmp")
    print(f"writing {path} {shape} uint16", file=sys.stderr, flush=True)
    tifffile.imwrite(
        tmp,
        planes_iter(),
        shape=shape,
        dtype=np.uint16,
        photometric="minisblack",
        metadata={"axes": "ZYX"},
        bigtiff=2 * planes * edge * edge > 2**31,
    )
    os.replace(tmp, path)
    return shape


def limited(command: list[str], limit_mib: int) -> tuple[list[str], Path | None, str]:
    """``command`` run inside a fresh memory cgroup of ``limit_mib`` MiB, the cgroup (None
    where none could be made) and how it is limited.

    The child shell moves itself into the cgroup, then ``exec``s the command (same PID, so
    the sampler follows it). Without a writable cgroup hierarchy the command runs unlimited.
    """
    name = f"napari-tiled-unet-bench-{os.getpid()}"
    limit = str(limit_mib * MIB)
    for root, knob in (
        (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"),  # cgroup v1
        (Path("/sys/fs/cgroup"), "memory.max"),  # cgroup v2
    ):
        group = root / name
        if not (root / "cgroup.procs").exists():
            continue
        try:
            group.mkdir(exist_ok=True)
            (group / knob).write_text(limit)
            if knob == "memory.limit_in_bytes" and (group / "memory.memsw.limit_in_bytes").exists():
                (group / "memory.memsw.limit_in_bytes").write_text(limit)  # no swapping out
            elif (group / "memory.swap.max").exists():
                (group / "memory.swap.max").write_text("0")
        except OSError:
            continue
        shell = (
            f"echo $$ > {shlex.quote(str(group / 'cgroup.procs'))} && exec {shlex.join(command)}"
        )
        return ["sh", "-c", shell], group, f"memory cgroup {group} limited to {limit_mib} MiB"
    return command, None, "no writable memory cgroup: NOT limited"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", type=int, nargs=3, default=[48, 512, 512], metavar=("Z", "Y", "X")
    )
    parser.add_argument("--base", type=int, default=8, help="base channels of the 3D U-Net")
    parser.add_argument("--depth", type=int, default=2, help="depth of the 3D U-Net")
    parser.add_argument("--anisotropic-levels", type=int, default=0)
    parser.add_argument("--tiles", type=int, nargs="*", default=[], help="more tile edges (cubes)")
    parser.add_argument(
        "--halos", type=int, nargs="*", default=[], help="ours again, default tile, halo=H"
    )
    parser.add_argument("--roi", type=int, default=96, help="MONAI roi edge (cube), voxels")
    parser.add_argument("--big-gib", type=float, default=1.0, help="size of the large stack")
    parser.add_argument("--big-edge", type=int, default=2048, help="Y/X edge of the large stack")
    parser.add_argument("--memory-limit-mib", type=int, default=768)
    parser.add_argument(
        "--big-tile", type=int, default=0, help="tile edge for the large stack (0: default)"
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-monai", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/napari-tiled-unet-predict-3d"))
    args = parser.parse_args(argv)
    if args.shape[1] != args.shape[2]:
        parser.error("--shape: Y and X must be equal (square planes)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = make_model(args.workdir / "model3d.pt", args.base, args.depth, args.anisotropic_levels)
    print(
        f"command: `{shlex.join(['python', 'benchmarks/predict_3d.py', *(argv or sys.argv[1:])])}`\n"
    )

    if not args.skip_throughput:
        print("## Throughput, 3D (Mpx/s here means Mvoxel/s)\n")
        sys.stdout.flush()
        throughput = [
            "--model", str(model), "--planes", str(args.shape[0]), "--size", str(args.shape[1]),
            "--roi", str(args.roi), "--warmup-size", "32", "--tiles", *map(str, args.tiles),
            "--halos", *map(str, args.halos),
        ]  # fmt: skip
        if args.skip_monai:
            throughput.append("--skip-monai")
        status = predict_throughput.main(throughput)
        if status:
            return status

    if not args.skip_big:
        path = args.workdir / f"stack_{args.big_gib:g}gib.tif"
        shape = write_stack(path, args.big_gib, args.big_edge)
        out = args.workdir / "stack_labels.tif"
        out.unlink(missing_ok=True)
        command = [
            *predict_memory.cli_command(), "predict", str(path), "-o", str(out),
            "--model", str(model), "--axes", "ZYX", "--kind", "labels", "--device", "cpu",
        ]  # fmt: skip
        if args.big_tile:
            command += ["--tile", str(args.big_tile)]
        command, group, how = limited(command, args.memory_limit_mib)
        print(f"running {shlex.join(command)}", file=sys.stderr, flush=True)
        result = predict_memory.run_predict(
            command, args.workdir / "rss_stack.csv", args.workdir / "stack.log", 1.0
        )
        if group is not None:
            group.rmdir()  # empty once the command has exited
        voxels = int(np.prod(shape))
        ok = (
            "ok"
            if result["returncode"] == 0 and out.exists()
            else (f"failed (exit {result['returncode']}; see {args.workdir / 'stack.log'})")
        )
        if ok == "ok":
            with tifffile.TiffFile(out) as tif:
                if tuple(tif.series[0].shape) != shape:
                    ok = f"output shape {tif.series[0].shape}, expected {shape}"
        sampled = result["sampled"]
        print(
            "\n## A Z-stack larger than the memory it may use\n\n"
            f"- stack: {shape[0]} x {shape[1]} x {shape[2]} uint16, "
            f"{os.path.getsize(path) / 2**30:.2f} GiB on disk ({path})\n"
            f"- {how}\n- command: `{shlex.join(command)}`\n\n"
            "| volume (GiB) | memory limit (MiB) | peak RSS (MiB) | RssAnon at peak (MiB) "
            "| RssFile at peak (MiB) | Mvoxel/s | wall (s) | output |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---|\n"
            f"| {voxels * 2 / 2**30:.2f} | {args.memory_limit_mib} | {result['maxrss_mib']:.0f} "
            f"| {sampled.get('RssAnon', 0) / MIB:.0f} | {sampled.get('RssFile', 0) / MIB:.0f} "
            f"| {voxels / result['wall_s'] / 1e6:.3f} | {result['wall_s']:.0f} | {ok} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
