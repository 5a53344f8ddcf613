"""Prediction throughput and memory: our overlap-tile engine versus MONAI and one whole-image pass.

Measures, on the same model weights and the same image, three ways of getting class
probabilities ``(num_classes, Y, X)`` from a raw uint16 image:

1. **ours**: ``napari_tiled_unet.predict(image, model, output="probabilities", device="cpu",
   tile_shape=(t, t), batch_size=b)`` for each tile edge ``t`` and batch size ``b`` asked for,
   and once with the package defaults (``tile_shape=None``, ``batch_size=1``). This is the curve
   "tile size -> Mpx/s, peak RSS" the default tile is picked from.
2. **MONAI**: ``monai.inferers.sliding_window_inference`` with its usual settings (roi 256 x 256,
   overlap 0.25, Gaussian blending, ``sw_batch_size`` 4; all options below) on the whole image,
   normalised in memory the way ours normalises (the model's stored
   :class:`~napari_tiled_unet.normalization.Normalization`, resolved on this image), followed by
   a softmax of the blended logits.
3. **whole image**: :func:`napari_tiled_unet.inference.forward_whole_image`, one forward pass over
   the whole mirror-padded, normalised image: the no-tiling limit, and the reference the others
   are compared with. A whole-image pass of a large image needs many GiB (5.5 GiB above the
   baseline at 3240 px for the bundled model), so with ``--whole-size W`` it runs on a centred
   W x W crop instead ("one large tile"): its Mpx/s is then the single-tile forward limit, and
   the others are compared with it where a crop's result is the whole image's, more than the
   network's context inside the crop.

Each method starts from the raw image, so normalisation, padding, stitching and the softmax are
timed with the network. For each configuration the script reports

- **Mpx/s**: image pixels / wall seconds, best of ``--repeat`` runs, after one warm-up run of the
  same configuration on a small crop (``--warmup-size``);
- **peak RSS** of that configuration alone: every configuration runs in its own fresh child
  process (this script with a hidden ``--one`` option). The child reads its own high-water mark
  (``VmHWM`` in ``/proc/self/status``) just before exiting. That is used rather than the
  ``ru_maxrss`` that ``os.wait4`` returns because on Linux a child's ``ru_maxrss`` also counts
  the address space it had before ``exec`` (a copy or a share of the parent's), which would mix
  the parent's memory into every child's peak; ``ru_maxrss`` is only the fallback where ``/proc``
  is missing. Two "baseline" children only import (one MONAI too), load the model and read the
  image: "above baseline" is a peak minus the matching one, the memory prediction itself takes;
- **work**: pixels pushed through the network (counted by a forward hook) per image pixel, i.e.
  what overlap, context and blending cost in computation;
- the largest absolute deviation of the probabilities from the whole-image result, over all
  pixels and within the interior (more than the network's context away from the border), and
  the fraction of pixels whose arg-max class differs. Ours should be ~1e-6 (float rounding);
  MONAI's is not exact: its windows see zero padding (the network's own) at the image border
  instead of the mirror padding the reference uses, and its blending averages overlapping
  windows whose receptive fields are cut off.

The image is the bundled ``sample_data/nuclei.tif`` (608 x 1020, uint16) mirror-tiled up to
``--size`` x ``--size``: realistic content, not noise. Everything runs on the CPU with torch's
default number of threads unless ``--threads`` is given. Progress goes to stderr; stdout is a
report (machine, command line, a markdown table, ratios) ready to paste into the README. Not a
test: it prints numbers. Timings on a shared machine are noisy; compare ratios from one run.

MONAI is a benchmark-only dependency (``pip install monai``); without it, pass ``--skip-monai``.

Usage::

    python benchmarks/predict_throughput.py                        # 3072 px, tiles 256 .. 2048
    python benchmarks/predict_throughput.py --size 1024 --tiles 256 512 --repeat 3
    python benchmarks/predict_throughput.py --tiles 512 1024 --batch-sizes 1 4 --skip-monai
    python benchmarks/predict_throughput.py --model my_model.pt --roi 512 --sw-batch-size 1
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

SAMPLE_IMAGE = (
    Path(__file__).resolve().parents[1] / "src" / "napari_tiled_unet" / "sample_data" / "nuclei.tif"
)
# 256 is left out by default: with the default model's 107 px context a 256 px tile writes only
# 32 x 32 px, 64x the work of the image (about an hour at 3072 px on 2 cores); --tiles 256 adds it.
DEFAULT_TILES = (384, 512, 768, 1024, 1536, 2048)
MIB = 2**20


# --------------------------------------------------------------------------------------------
# The image
# --------------------------------------------------------------------------------------------


def make_image(size: int, source: Path = SAMPLE_IMAGE) -> np.ndarray:
    """The sample image mirror-tiled (flipped copies side by side, no seams) to ``size`` x ``size``.

    Returns
    -------
    numpy.ndarray, shape (size, size), the sample's dtype (uint16)
    """
    sample = tifffile.imread(source)
    pads = [(0, max(size - n, 0)) for n in sample.shape]
    return np.ascontiguousarray(np.pad(sample, pads, mode="symmetric")[:size, :size])


def make_volume(planes: int, size: int, source: Path = SAMPLE_IMAGE) -> np.ndarray:
    """A ``(planes, size, size)`` stack: plane z is the mirror-tiled sample moved down 3z rows.

    Structures continue smoothly from plane to plane, as in a Z-stack; not noise.
    """
    tall = make_image(size + 3 * planes, source)
    return np.ascontiguousarray(
        np.stack([tall[3 * z : 3 * z + size, :size] for z in range(planes)])
    )


# --------------------------------------------------------------------------------------------
# One configuration, in a child process
# --------------------------------------------------------------------------------------------


@dataclass
class Config:
    """One measured configuration; what the parent hands a child (as JSON)."""

    method: str  # "baseline" (imports only), "whole", "ours" or "monai"
    label: str
    tile: int | None = None  # ours: network tile edge; None is the package default
    halo: int | None = None  # ours: halo= (None: exact)
    batch: int = 1  # ours: batch_size; MONAI: sw_batch_size
    roi: int = 256  # MONAI
    overlap: float = 0.25  # MONAI
    blend: str = "gaussian"  # MONAI
    import_monai: bool = False  # baseline: import MONAI too, as the MONAI child does


def peak_rss_self() -> int | None:
    """This process's peak resident set size in bytes (``VmHWM``), or None without /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PixelCounter:
    """A forward pre-hook adding up the pixels (batch x spatial) fed to a network."""

    def __init__(self) -> None:
        self.pixels = 0

    def __call__(self, module, inputs) -> None:
        x = inputs[0]
        self.pixels += int(x.shape[0]) * int(np.prod(x.shape[2:]))


def normalised(image: np.ndarray, model) -> np.ndarray:
    """``image`` ``(Y, X)`` as ``(1, Y, X)`` float32, normalised as ``predict`` normalises it.

    Same resolution as :func:`napari_tiled_unet.inference.iter_predict`: the model's stored
    normalisation (none if the metadata has none), resolved on the channel-first image.
    """
    from napari_tiled_unet.normalization import Normalization

    source = image[None]
    norm = Normalization.from_dict(model.metadata.get("normalization")).resolve(source)
    return norm.apply(source)


def method_fn(config: Config, model):
    """A function raw image ``(Y, X)`` -> probabilities ``(num_classes, Y, X)`` float32 numpy."""
    import torch

    from napari_tiled_unet import predict
    from napari_tiled_unet.inference import forward_whole_image

    if config.method == "ours":

        def run(image: np.ndarray) -> np.ndarray:
            tile_shape = None if config.tile is None else (config.tile,) * image.ndim
            return predict(
                image,
                model,
                output="probabilities",
                device="cpu",
                tile_shape=tile_shape,
                halo=config.halo,
                batch_size=config.batch,
            )

    elif config.method == "whole":

        def run(image: np.ndarray) -> np.ndarray:
            return forward_whole_image(normalised(image, model), model, device="cpu")

    elif config.method == "monai":
        from monai.inferers import sliding_window_inference

        def run(image: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(normalised(image, model)[None])
            with torch.inference_mode():
                logits = sliding_window_inference(
                    x,
                    roi_size=(config.roi,) * (x.ndim - 2),
                    sw_batch_size=config.batch,
                    predictor=model,
                    overlap=config.overlap,
                    mode=config.blend,
                )
                return torch.softmax(torch.as_tensor(logits), dim=1)[0].numpy()

    else:
        raise ValueError(f"unknown method {config.method!r}")
    return run


def crop_start(size: int, crop: int) -> int:
    """Start of the centred ``crop`` within ``size``, on a 256 px grid (every network's pooling grid)."""
    return (size - crop) // 2 // 256 * 256


def run_one(spec_path: Path) -> None:
    """Child process: run one configuration and write its result JSON (and probabilities)."""
    spec = json.loads(spec_path.read_text())
    config = Config(**spec["config"])
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    from napari_tiled_unet import default_model_path, load_model
    from napari_tiled_unet.inference import plan_for

    if config.import_monai:
        import monai.inferers  # noqa: F401

    model_path = spec["model"] or str(default_model_path())
    model = load_model(model_path).eval()
    image = np.load(spec["image"])
    crop = spec["whole_size"]
    if config.method == "whole" and crop < image.shape[0]:
        from napari_tiled_unet.normalization import Normalization

        # normalised as the whole image is (percentiles of all of it), then cropped
        stored = Normalization.from_dict(model.metadata.get("normalization"))
        model.metadata["normalization"] = stored.resolve(image[None]).to_dict()
        start = crop_start(image.shape[0], crop)
        image = np.ascontiguousarray(image[start : start + crop, start : start + crop])
    geometry = model.geometry
    result: dict[str, Any] = {
        "model": model_path,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "context": [geometry.context_before, geometry.context_after],
        "model_config": str(model.config),
        "pixels": int(image.size),
        "ndim": image.ndim,
    }
    if config.method != "baseline":
        if config.method == "ours":
            tile = None if config.tile is None else (config.tile,) * image.ndim
            plan = plan_for(image.shape, model, tile, config.halo)
            result["tile_shape"] = list(plan.tile_shape)
        run = method_fn(config, model)
        w = min(spec["warmup_size"], *image.shape)
        run(
            np.ascontiguousarray(image[(slice(0, w),) * image.ndim])
        )  # warm-up: lazy init, allocator, kernels
        counter = PixelCounter()
        model.register_forward_pre_hook(counter)
        times = []
        probs = None
        for _ in range(spec["repeat"]):
            probs = None  # free the previous result before the next run
            gc.collect()
            counter.pixels = 0
            start = time.perf_counter()
            probs = run(image)
            times.append(time.perf_counter() - start)
        result.update(
            times=times,
            net_pixels=counter.pixels,
            shape=list(probs.shape),
            dtype=str(probs.dtype),
        )
        np.save(spec["probs"], np.asarray(probs, dtype=np.float32))
    result["peak_rss"] = peak_rss_self()
    Path(spec["result"]).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------
# The parent: run every configuration in its own child, compare, report
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """A configuration and what was measured for it."""

    config: Config
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    baseline_rss: int | None = None  # peak RSS of the matching imports-only child
    max_dev: float | None = None
    max_dev_interior: float | None = None
    labels_differ: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def mpx_per_s(self) -> float:
        return self.result["pixels"] / min(self.result["times"]) / 1e6

    @property
    def peak_rss(self) -> int:
        return self.result["peak_rss"]

    @property
    def rss_above_baseline(self) -> int | None:
        return None if self.baseline_rss is None else self.peak_rss - self.baseline_rss


def run_child(config: Config, workdir: Path, common: dict[str, Any], index: int) -> Row:
    """Run ``config`` in a fresh Python process; return its row (``error`` set if it failed)."""
    spec_path = workdir / f"spec_{index}.json"
    result_path = workdir / f"result_{index}.json"
    spec = {
        **common,
        "config": config.__dict__,
        "result": str(result_path),
        "probs": str(workdir / f"probs_{index}.npy"),
    }
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, str(Path(__file__).resolve()), "--one", str(spec_path)]
    child = subprocess.Popen(command, stdout=sys.stderr)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    row = Row(config)
    if child.returncode != 0 or not result_path.exists():
        code = child.returncode
        why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        row.error = f"child failed ({why}{', out of memory?' if code == -9 else ''})"
        return row
    row.result = json.loads(result_path.read_text())
    if row.result["peak_rss"] is None:  # no /proc: ru_maxrss is KiB on Linux, bytes on macOS
        row.result["peak_rss"] = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return row


def compare(row: Row, reference: np.ndarray, probs_path: Path, border: int) -> None:
    """Fill ``row``'s deviations from the whole-image ``reference`` probabilities.

    A reference smaller than the image is the centred crop's (``--whole-size``): compared
    only where it is the whole image's result, more than ``border`` px inside the crop.
    """
    probs = np.load(probs_path, mmap_mode="r")
    size, crop = probs.shape[-1], reference.shape[-1]
    if crop < size and probs.shape[:-2] == reference.shape[:-2]:
        inside = slice(crop_start(size, crop) + border, crop_start(size, crop) + crop - border)
        probs, reference = probs[:, inside, inside], reference[:, border:-border, border:-border]
        border = 0
    if probs.shape != reference.shape:
        row.error = f"probabilities have shape {probs.shape}, expected {reference.shape}"
        return
    diff = np.abs(probs - reference)
    row.max_dev = float(diff.max())
    inner = diff[(slice(None),) + (slice(border, -border),) * (diff.ndim - 1)] if border else diff
    row.max_dev_interior = float(inner.max()) if inner.size else None
    row.labels_differ = float(np.mean(probs.argmax(0) != reference.argmax(0)))


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def describe(config: Config, result: dict[str, Any]) -> tuple[str, str, str]:
    """(method, tile, batch) cells of the table."""
    if config.method == "ours":
        tile = "x".join(map(str, result.get("tile_shape", [config.tile])))
        if config.tile is None:
            tile += " (default)"
        elif result.get("tile_shape", [config.tile])[0] != config.tile:
            tile += f" (asked {config.tile}; the plan's even split)"
        method = "ours" if config.halo is None else f"ours, halo {config.halo} (approximate)"
        return method, tile, str(config.batch)
    if config.method == "monai":
        return (
            f"MONAI (overlap {config.overlap:g}, {config.blend})",
            "x".join([str(config.roi)] * result.get("ndim", 2)),
            str(config.batch),
        )
    return "whole image", "-", "-"


def fmt_dev(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1e}"


def fmt_mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f}"


def report(
    rows: list[Row],
    baselines: dict[str, Row],
    args: argparse.Namespace,
    command: str,
) -> str:
    """The markdown report: machine, command line, table, ratios."""
    res = baselines["plain"].result
    rss = f"{fmt_mib(baselines['plain'].peak_rss)} MiB"
    if "monai" in baselines:
        rss += f", {fmt_mib(baselines['monai'].peak_rss)} MiB with MONAI imported too"
    lines = [
        f"command: `{command}`",
        "",
        f"- machine: {cpu_model()}, {usable_cores()} usable cores "
        f"({os.cpu_count()} logical CPUs), {platform.system()} {platform.machine()}",
        f"- Python {platform.python_version()}, torch {res['torch']} "
        f"({res['threads']} threads{', set by --threads' if args.threads else ', default'}), "
        f"numpy {np.__version__}"
        + (f", MONAI {importlib.metadata.version('monai')}" if not args.skip_monai else ""),
        f"- model: `{res['model']}` ({res['model_config']}; context {res['context'][0]}"
        f"+{res['context'][1]} px)",
        f"- image: `{SAMPLE_IMAGE.name}` mirror-tiled to "
        + (f"{args.planes} planes of " if args.planes else "")
        + f"{args.size} x {args.size} px uint16"
        + (" (plane z moved down 3z rows)" if args.planes else "")
        + "; "
        f"best of {args.repeat} run(s) after a warm-up on {args.warmup_size} px",
        f"- baseline: peak RSS of a child that only imports, loads the model and reads the "
        f"image: {rss}",
        f"- interior: more than {max(res['context'])} px (the network's context) from the border",
        *(
            [
                f"- whole image: a centred {args.whole_size} x {args.whole_size} px crop as one "
                f"tile (the single-tile forward limit); deviations are measured against it "
                f"inside the crop, more than the network's context from its border"
            ]
            if args.whole_size < args.size
            else []
        ),
        "",
        "| method | tile | batch | work (net px / image px) | seconds | Mpx/s | peak RSS (MiB) "
        "| above baseline (MiB) | max abs Δp vs whole | same, interior | labels differ |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        method, tile, batch = describe(row.config, row.result)
        if "times" not in row.result:
            lines.append(f"| {method} | {tile} | {batch} | {row.error} | | | | | | | |")
            continue
        lines.append(
            f"| {method} | {tile} | {batch} | {row.result['net_pixels'] / row.result['pixels']:.2f} "
            f"| {min(row.result['times']):.2f} | {row.mpx_per_s():.3f} "
            f"| {fmt_mib(row.peak_rss)} | {fmt_mib(row.rss_above_baseline)} "
            f"| {fmt_dev(row.max_dev)} "
            f"| {fmt_dev(row.max_dev_interior)} "
            f"| {'n/a' if row.labels_differ is None else f'{100 * row.labels_differ:.3f} %'} |"
        )

    timed = {id(r): r for r in rows if "times" in r.result}
    default = next(
        (
            r
            for r in rows
            if r.config.method == "ours" and r.config.tile is None and r.config.halo is None
        ),
        None,
    )
    whole = next((r for r in rows if r.config.method == "whole"), None)
    monai = next((r for r in rows if r.config.method == "monai"), None)
    pairs: list[tuple[str, Row | None, Row | None]] = [
        ("ours (default tile) / MONAI", default, monai),
        ("ours (default tile) / whole image", default, whole),
    ]
    pairs += [
        (f"ours tile {r.config.tile}, batch {r.config.batch} / whole image", r, whole)
        for r in rows
        if r.config.method == "ours" and r.config.tile is not None
    ]
    pairs += [
        (f"ours (default tile), halo {r.config.halo} / MONAI", r, monai)
        for r in rows
        if r.config.method == "ours" and r.config.halo is not None
    ]
    lines += [
        "",
        "| ratio | Mpx/s | peak RSS | peak RSS above baseline |",
        "|---|---:|---:|---:|",
    ]
    for name, a, b in pairs:
        if a is None or b is None:
            continue
        if id(a) in timed and id(b) in timed:
            speed = a.mpx_per_s() / b.mpx_per_s()
            above_a, above_b = a.rss_above_baseline, b.rss_above_baseline
            above = "n/a" if not (above_a and above_b) else f"{above_a / above_b:.2f}"
            lines.append(f"| {name} | {speed:.2f} | {a.peak_rss / b.peak_rss:.2f} | {above} |")
        else:
            lines.append(f"| {name} | n/a | n/a | n/a |")
    return "\n".join(lines)


def progress(row: Row) -> str:
    method, tile, batch = describe(row.config, row.result)
    if "times" not in row.result:
        return f"{method} tile {tile} batch {batch}: {row.error}"
    return (
        f"{method} tile {tile} batch {batch}: {min(row.result['times']):.2f} s, "
        f"{row.mpx_per_s():.3f} Mpx/s, peak RSS {row.peak_rss / MIB:.0f} MiB, "
        f"max abs dev {fmt_dev(row.max_dev)}" + (f" ({row.error})" if row.error else "")
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    script = sys.argv[0] if Path(sys.argv[0]).name == Path(__file__).name else __file__
    command = shlex.join(["python", script, *argv])
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, help="model file (default: the bundled model)")
    parser.add_argument("--size", type=int, default=3072, help="image edge, px")
    parser.add_argument(
        "--planes",
        type=int,
        default=0,
        help="a Z-stack of this many planes of --size x --size (for a 3D --model; 0: 2D)",
    )
    parser.add_argument(
        "--whole-size",
        type=int,
        default=0,
        help="run the whole-image pass on a centred crop of this edge, px (0: the whole image)",
    )
    parser.add_argument(
        "--tiles", type=int, nargs="*", default=list(DEFAULT_TILES), help="our tile edges, px"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1], help="our batch sizes")
    parser.add_argument(
        "--halos", type=int, nargs="*", default=[], help="ours with the default tile and halo=H"
    )
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per configuration")
    parser.add_argument("--warmup-size", type=int, default=256, help="warm-up crop edge, px")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--roi", type=int, default=256, help="MONAI roi_size edge, px")
    parser.add_argument("--overlap", type=float, default=0.25, help="MONAI overlap")
    parser.add_argument(
        "--blend", default="gaussian", choices=["gaussian", "constant"], help="MONAI mode"
    )
    parser.add_argument("--sw-batch-size", type=int, default=4, help="MONAI sw_batch_size")
    parser.add_argument("--skip-monai", action="store_true", help="do not run MONAI")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # child process entry
    args = parser.parse_args(argv)
    if args.one is not None:
        run_one(args.one)
        return 0
    if not args.skip_monai and importlib.util.find_spec("monai") is None:
        parser.exit(
            2,
            "MONAI is not installed. It is a benchmark-only dependency: `pip install monai`, "
            "or pass --skip-monai.\n",
        )
    if args.repeat < 1 or args.size < 1:
        parser.error("--repeat and --size must be at least 1")
    args.whole_size = min(args.whole_size or args.size, args.size)

    configs = [Config("whole", "whole image")]
    configs.append(Config("ours", "ours default", tile=None, batch=1))
    configs += [
        Config("ours", f"ours {t} b{b}", tile=t, batch=b)
        for t in args.tiles
        for b in args.batch_sizes
    ]
    configs += [Config("ours", f"ours default, halo {h}", halo=h) for h in args.halos]
    if not args.skip_monai:
        configs.append(
            Config(
                "monai",
                "MONAI",
                batch=args.sw_batch_size,
                roi=args.roi,
                overlap=args.overlap,
                blend=args.blend,
            )
        )

    image = make_image(args.size) if not args.planes else make_volume(args.planes, args.size)
    with tempfile.TemporaryDirectory(prefix="predict_throughput_") as tmp:
        workdir = Path(tmp)
        np.save(workdir / "image.npy", image)
        del image
        common = {
            "image": str(workdir / "image.npy"),
            "model": None if args.model is None else str(args.model.resolve()),
            "threads": args.threads,
            "repeat": args.repeat,
            "warmup_size": args.warmup_size,
            "whole_size": args.whole_size,
        }
        baselines = {"plain": run_child(Config("baseline", "baseline"), workdir, common, 0)}
        if not args.skip_monai:
            baselines["monai"] = run_child(
                Config("baseline", "baseline with MONAI", import_monai=True), workdir, common, 1
            )
        for base in baselines.values():
            if not base.ok:
                print(f"the {base.config.label} child failed: {base.error}", file=sys.stderr)
                return 1
        border = max(baselines["plain"].result["context"])
        rows: list[Row] = []
        reference = None
        for index, config in enumerate(configs, start=len(baselines)):
            print(f"running {config.label} ...", file=sys.stderr, flush=True)
            row = run_child(config, workdir, common, index)
            base = baselines["monai" if config.method == "monai" else "plain"]
            row.baseline_rss = base.peak_rss
            probs_path = workdir / f"probs_{index}.npy"
            if row.ok and config.method == "whole":
                reference = np.load(probs_path)
                row.max_dev = row.max_dev_interior = row.labels_differ = 0.0
            elif row.ok and reference is not None:
                compare(row, reference, probs_path, border)
            probs_path.unlink(missing_ok=True)
            rows.append(row)
            print(progress(row), file=sys.stderr, flush=True)
    print(report(rows, baselines, args, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
