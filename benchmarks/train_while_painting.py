"""Train while you paint: a scripted session in a real viewer, and what a live preview costs.

**Session** (``--session``; each start in a fresh process, so each pays for importing torch):
a real napari viewer (``xvfb-run`` without a display) opens the bundled nuclei image and a
blank Labels layer; brush strokes (``Labels.paint``, as a user's brush) paint the interior of a
few nuclei with 2 and background lines with 1 (sparse mode: 0 = not annotated). The Train
widget trains with its live preview on, from a new network (``scratch``) and from the bundled
model (``bundled``). After the first preview, more strokes are painted while training runs
(they reach the sampler, :mod:`napari_tiled_unet._napari._live_labels`). The session stops
after ``--seconds``. Reported per start: seconds from pressing Train to the first preview,
the preview's object F1 (IoU 0.5) against the sample's reference masks at each preview (the
preview's nucleus class, 8-connected components as objects), the steps done, and the largest
gap between ticks of a 10 ms QTimer on the GUI thread over the whole session (target < 100 ms;
reported, never asserted).

**Cost** (``--cost``): the seconds of one preview of a 512 x 512 view plus the network's
context and of one training step (tile 256, batch 4), for the widget's default network and a
small one; then the training step alone and beside a preview computed in a loop in another
thread (1 or 2 torch threads), side by side: what the preview takes from training.

Not a test: it prints (and with ``--out`` writes) numbers that depend on the machine and its load.

Usage::

    xvfb-run -a python benchmarks/train_while_painting.py --session --seconds 120
    python benchmarks/train_while_painting.py --cost
    xvfb-run -a python benchmarks/train_while_painting.py --session --cost \\
        --out benchmarks/results/train_while_painting.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SAMPLE = REPO / "src" / "napari_tiled_unet" / "sample_data"
STARTS = ("scratch", "bundled", "scratch-no-preview")


# -- the scripted strokes ------------------------------------------------------------------


def stroke_plan(
    reference: np.ndarray, nuclei: int, seed: int, one_id_each: bool = False
) -> list[tuple[int, int, int]]:
    """Brush dabs ``(y, x, value)``: the interiors of ``nuclei`` nuclei (2; with
    ``one_id_each`` 2, 3, ... as partial instance labels) and background lines away from every
    nucleus (1), in painting order (alternating nucleus and line)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    ids, sizes = np.unique(reference[reference > 0], return_counts=True)
    big = ids[sizes >= np.percentile(sizes, 40)]
    chosen = rng.choice(big, size=min(nuclei, len(big)), replace=False)
    far = ndimage.distance_transform_edt(reference == 0) > 8
    dabs: list[list[tuple[int, int, int]]] = []
    for n, k in enumerate(chosen):
        inside = ndimage.binary_erosion(reference == k, iterations=3)
        ys, xs = np.nonzero(inside)
        keep = (ys % 4 == 0) & (xs % 4 == 0)
        value = 2 + n if one_id_each else 2
        dabs.append([(int(y), int(x), value) for y, x in zip(ys[keep], xs[keep], strict=True)])
        # a background line: a row segment of far-from-nuclei pixels near this nucleus
        y0 = int(np.clip(ys.mean() + rng.integers(-40, 40), 0, reference.shape[0] - 1))
        row = np.flatnonzero(far[y0])
        if row.size:
            x0 = int(rng.choice(row))
            xs_line = [x for x in range(x0, min(x0 + 60, reference.shape[1]), 3) if far[y0, x]]
            dabs.append([(y0, x, 1) for x in xs_line])
    return [d for group in dabs for d in group]


def paint(layer, dabs: list[tuple[int, int, int]], recorder=None) -> None:
    """Paint brush dabs with napari's brush (one paint event each), redrawing once at the end.

    The script paints many dabs at once on the GUI thread (a user's dabs come one mouse event
    at a time): with a ``recorder`` the gaps this causes fall in phases of their own
    ("paint", and "settle" for the gap that ends just after), apart from "train"."""
    from gui_stall import wait_until

    if recorder is not None:
        recorder.mark("paint")
    for y, x, value in dabs:
        layer.paint((y, x), value, refresh=False)
    layer.refresh()
    if recorder is not None:
        recorder.mark("settle")
        wait_until(lambda: False, 0.2)
        recorder.mark("train")


def preview_f1(preview: np.ndarray, reference: np.ndarray, instances: bool = False) -> float:
    """Object F1 (IoU 0.5) against the reference: of the preview's nucleus class (value 2), or
    of its objects when the preview shows instances."""
    from scipy import ndimage

    from napari_tiled_unet.metrics import match_objects

    if instances:
        objects = preview
    else:
        objects, _ = ndimage.label(preview == 2, structure=np.ones((3, 3)))
    return float(match_objects(reference, objects).f1)


def reference_masks() -> np.ndarray:
    import tifffile

    return tifffile.imread(SAMPLE / "nuclei_labels.tif")


# -- one session ---------------------------------------------------------------------------


def run_session(start: str, args: argparse.Namespace) -> dict[str, Any]:
    """One scripted session in this process (a fresh one per start)."""
    import napari
    import tifffile
    from gui_stall import GapRecorder, wait_until

    from napari_tiled_unet._napari._start_from import BUNDLED_MODEL, NEW_NETWORK
    from napari_tiled_unet._napari.train_widget import TrainWidget

    image = tifffile.imread(SAMPLE / "nuclei.tif")
    reference = tifffile.imread(SAMPLE / "nuclei_labels.tif")
    instances = start == "bundled"  # the bundled instance model fine-tunes on partial instances
    dabs = stroke_plan(reference, args.nuclei, args.seed, one_id_each=instances)
    first_half, second_half = dabs[: len(dabs) // 2], dabs[len(dabs) // 2 :]

    viewer = napari.Viewer(show=True)
    recorder = GapRecorder(10)
    viewer.add_image(image, name="nuclei")
    labels = viewer.add_labels(np.zeros(image.shape, np.uint8), name="scribbles")
    labels.brush_size = args.brush
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    viewer.reset_view()
    wait_until(lambda: False, 1.0)
    paint(labels, first_half)
    widget.reset_choices()
    widget.label_mode.value = "sparse-instance" if instances else args.label_mode
    widget.start_from.value = BUNDLED_MODEL if start == "bundled" else NEW_NETWORK
    widget.live_preview.value = start != "scratch-no-preview"
    if start.startswith("scratch"):
        widget.base_channels.value, widget.depth.value = args.base, args.depth
    widget.tile_size.value, widget.batch_size.value = args.tile, args.batch
    widget.iterations.value = 1_000_000
    widget.device.value = "cpu"
    widget.preview_every.value = args.preview_every
    result: dict[str, Any] = {"start": start, "dabs": len(dabs), "curve": []}

    recorder.start()
    recorder.mark("train")
    pressed = time.perf_counter()
    if widget.train() is None:
        result["error"] = widget.status.value
        recorder.stop()
        viewer.close()
        return result
    preview = widget.live.preview
    painted_more = False
    seen = 0

    def due() -> bool:
        return not painted_more and time.perf_counter() - pressed >= args.strokes_at

    while time.perf_counter() - pressed < args.seconds and widget.running:
        wait_until(lambda s=seen: len(preview.shown) > s or not widget.running or due(), 5.0)
        if due():
            paint(labels, second_half, recorder)  # strokes that flow in while training runs
            painted_more = True
        if len(preview.shown) > seen:
            seen = len(preview.shown)
            now = time.perf_counter() - pressed
            if "first_preview_s" not in result:
                result["first_preview_s"] = now
            data = np.asarray(preview.layer.data)
            recorder.mark("score")  # the script's own scoring: not a gap of the app
            shown = preview.shown[-1].index  # score the part of the image the preview covers
            f1 = preview_f1(data[shown], reference[shown], instances)
            recorder.mark("settle")
            wait_until(lambda: False, 0.2)
            recorder.mark("train")
            result["curve"].append(
                {
                    "seconds": now,
                    "step": widget.trainer.step,
                    "f1": f1,
                    "nucleus_fraction": float(
                        np.mean(data[shown] > 0 if instances else data[shown] == 2)
                    ),
                    "covered": float(data[shown].size / data.size),
                    "compute_s": preview.last_compute,
                    "show_s": preview.last_show,
                }
            )
            print(
                f"  {start}: {now:6.1f} s  step {widget.trainer.step:4d}  F1 {f1:.3f}", flush=True
            )
    if not widget.running and "error" not in result:
        result["error"] = widget.status.value
    trainer = widget.trainer
    widget.stop()
    wait_until(lambda: not widget.running and not preview.running, 120)
    result["steps"] = trainer.step
    result["boxes_followed"] = trainer._sampler.boxes_taken if trainer.step else 0
    recorder.stop()
    result.update(gap_summary(recorder, pressed))
    viewer.close()
    return result


def gap_summary(recorder, pressed: float) -> dict[str, Any]:
    """The largest gaps of the "train" phases (and when they ended, seconds since Train), the
    count above 100 ms, and the largest gap of the script's own painting."""
    ticks = np.asarray(recorder.ticks)
    gaps, ends = np.diff(ticks) * 1000, ticks[1:]
    in_train = np.zeros(len(gaps), bool)
    for (start, name), (end, _next) in zip(recorder.marks, recorder.marks[1:], strict=False):
        if name == "train":
            in_train |= (ends > start) & (ends <= end)
    train, when = gaps[in_train], ends[in_train] - pressed
    top = np.argsort(train)[::-1][:5]
    return {
        "max_gap_ms": float(train.max()) if train.size else 0.0,
        "gaps_over_100ms": int((train > 100).sum()),
        "largest_gaps": [[round(float(when[i]), 1), round(float(train[i]))] for i in top],
        "max_gap_painting_ms": float(gaps[~in_train].max()) if (~in_train).any() else 0.0,
    }


def session(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each start in a fresh process; their results."""
    results = []
    for start in args.starts:
        command = [sys.executable, __file__, "--one", start, *sys.argv[1:]]
        command = [c for c in command if c not in ("--session", "--cost")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO / "src")]))
        print(f"session: start from {start}", flush=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        sys.stdout.write(
            "\n".join(line for line in done.stdout.splitlines() if not line.startswith("RESULT "))
            + "\n"
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            results.append({"start": start, "error": done.stderr.strip()[-800:], "curve": []})
        else:
            results.append(json.loads(lines[-1][len("RESULT ") :]))
    return results


# -- what a preview costs ------------------------------------------------------------------


def cost(args: argparse.Namespace) -> dict[str, Any]:
    import tifffile
    import torch

    from napari_tiled_unet.config import NetworkSpec
    from napari_tiled_unet.inference import predict
    from napari_tiled_unet.model.unet import UNet

    image = tifffile.imread(SAMPLE / "nuclei.tif").astype(np.float32)
    rows = []
    for base, depth in ((32, 4), (16, 3)):
        config = NetworkSpec(base_channels=base, depth=depth).unet_config(1, 3, 2)
        net = UNet.from_config(config).eval()
        halo = max(net.geometry.axes[0].halo)
        crop = image[: 512 + 2 * halo, : 512 + 2 * halo]
        previews = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            predict(crop, net, device="cpu")
            previews.append(time.perf_counter() - t)
        steps = [train_step_seconds(UNet.from_config(config)) for _ in range(args.repeats)]
        rows.append(
            {
                "network": f"base {base}, depth {depth}",
                "halo": halo,
                "crop": list(crop.shape),
                "preview_s": min(previews),
                "step_s": min(steps),
            }
        )
        print(
            f"cost: base {base} depth {depth}: preview {min(previews):.2f} s, "
            f"step {min(steps):.2f} s",
            flush=True,
        )

    # A step alone, then beside a preview loop (1 or 2 torch threads), side by side.
    config = NetworkSpec(base_channels=16, depth=3).unet_config(1, 3, 2)
    net, viewer_net = UNet.from_config(config), UNet.from_config(config).eval()
    crop = image[:, :624]
    contention = []
    for rep in range(args.repeats):
        alone = train_step_seconds(net, count=3)
        row = {"rep": rep, "step_alone_s": alone}
        for threads in (1, 2):
            stop, times = threading.Event(), []

            def loop(threads=threads, stop=stop, times=times):
                old = torch.get_num_threads()
                torch.set_num_threads(threads)
                try:
                    while not stop.is_set():
                        t = time.perf_counter()
                        predict(crop, viewer_net, device="cpu")
                        times.append(time.perf_counter() - t)
                finally:
                    torch.set_num_threads(old)

            thread = threading.Thread(target=loop)
            thread.start()
            row[f"step_beside_{threads}_s"] = train_step_seconds(net, count=3)
            stop.set()
            thread.join()
            row[f"preview_{threads}_s"] = float(np.mean(times)) if times else float("nan")
        contention.append(row)
        print(f"cost: contention rep {rep}: {row}", flush=True)
    return {"torch_threads": torch.get_num_threads(), "rows": rows, "contention": contention}


def train_step_seconds(net, count: int = 1) -> float:
    """Seconds per optimizer step (forward, backward, Adam) of tile 256, batch 4."""
    import torch

    net.train()
    optimizer = torch.optim.Adam(net.parameters())
    x = torch.randn(4, 1, 256, 256)
    targets = torch.randint(0, 3, (4, 256, 256))
    t = time.perf_counter()
    for _ in range(count):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), targets).backward()
        optimizer.step()
    return (time.perf_counter() - t) / count


# -- report --------------------------------------------------------------------------------


def report(results: list[dict], costs: dict | None, args: argparse.Namespace) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Train while you paint",
        "",
        f"`{' '.join(['python benchmarks/train_while_painting.py', *sys.argv[1:]])}` "
        f"on {os.cpu_count()} CPU cores (load average {load:.1f} at the end: the machine is "
        "shared, so seconds are inflated and only ratios measured side by side mean much).",
        "",
    ]
    if results:
        lines += [
            "## Scripted session",
            "",
            f"Bundled nuclei image (608 x 1020), blank Labels layer, {args.label_mode} mode; "
            f"brush {args.brush} px on {args.nuclei} nuclei (2) and background lines (1), half "
            f"before Train and half {args.strokes_at:g} s after it; new network: base "
            f"{args.base}, depth {args.depth}; tile {args.tile}, batch {args.batch}, preview "
            f"every {args.preview_every} s; {args.seconds} s per start.",
            "",
            "| start | Train → first preview (s) | previews | steps | last preview F1 | "
            "max GUI gap (ms) | gaps > 100 ms | painted boxes followed | max gap while the "
            "script painted or scored (ms) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results:
            if "steps" in r:
                curve = r.get("curve", [])
                first = f"{r['first_preview_s']:.1f}" if curve else "—"
                f1 = f"{curve[-1]['f1']:.3f}" if curve else "—"
                lines.append(
                    f"| {r['start']} | {first} | {len(curve)} | {r['steps']} | {f1} | "
                    f"{r.get('max_gap_ms', float('nan')):.0f} | {r.get('gaps_over_100ms', '')} | "
                    f"{r.get('boxes_followed', '')} | {r.get('max_gap_painting_ms', 0):.0f} |"
                )
            else:
                lines.append(f"| {r['start']} | — | 0 | | | | | | |")
        lines += ["", "Largest GUI gaps (seconds since Train, ms):", ""]
        for r in results:
            if r.get("largest_gaps"):
                gaps = ", ".join(f"{ms} ms at {t} s" for t, ms in r["largest_gaps"])
                lines.append(f"- {r['start']}: {gaps}")
        for r in results:
            if r.get("error"):
                lines += ["", f"*{r['start']}*: {r['error']}"]
        lines += [
            "",
            "Preview object F1 over time against the reference masks, both cut to the part "
            "of the image the preview covers (the canvas's view plus nothing else: 'covered'), "
            "and the share of that part the preview calls nucleus (the reference masks over "
            f"the whole image: {np.mean(reference_masks() > 0):.3f}):",
            "",
            "| start | s | step | F1 | covered | nucleus share | preview compute (s) | shown "
            "on the GUI thread (ms) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in results:
            for p in r.get("curve", []):
                lines.append(
                    f"| {r['start']} | {p['seconds']:.1f} | {p['step']} | "
                    f"{p['f1']:.3f} | {p.get('covered', float('nan')):.2f} | "
                    f"{p.get('nucleus_fraction', float('nan')):.3f} | "
                    f"{p['compute_s']:.2f} | {1000 * p.get('show_s', float('nan')):.0f} |"
                )
        if any(r.get("curve") for r in results):
            lines += [
                "",
                f"![F1 over time]({Path(args.out).with_suffix('.png').name})" if args.out else "",
            ]
    if costs:
        lines += [
            "",
            "## What a preview costs",
            "",
            f"torch threads: {costs['torch_threads']}. A preview = the 512 x 512 view plus the "
            "network's halo; a step = forward, backward and Adam on 4 tiles of 256 x 256.",
            "",
            "| network | halo (px) | crop | preview (s) | training step (s) |",
            "|---|---|---|---|---|",
        ]
        for row in costs["rows"]:
            lines.append(
                f"| {row['network']} | {row['halo']} | {row['crop'][0]} x {row['crop'][1]} | "
                f"{row['preview_s']:.2f} | {row['step_s']:.2f} |"
            )
        lines += [
            "",
            "A base-16 depth-3 training step alone and beside previews computed back to back "
            "in another thread with 1 or 2 torch threads (side by side, per repetition):",
            "",
            "| rep | step alone (s) | beside 1-thread previews (s) | ratio | preview (s) | "
            "beside 2-thread previews (s) | ratio | preview (s) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in costs["contention"]:
            a = row["step_alone_s"]
            lines.append(
                f"| {row['rep']} | {a:.2f} | {row['step_beside_1_s']:.2f} | "
                f"{row['step_beside_1_s'] / a:.2f} | {row['preview_1_s']:.2f} | "
                f"{row['step_beside_2_s']:.2f} | {row['step_beside_2_s'] / a:.2f} | "
                f"{row['preview_2_s']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5), layout="constrained")
    for r in results:
        curve = r.get("curve", [])
        if curve:
            axes.plot(
                [p["seconds"] for p in curve],
                [p["f1"] for p in curve],
                "o-",
                label=f"from {r['start']}",
            )
    axes.set_xlabel("seconds since Train")
    axes.set_ylabel("preview object F1 (IoU 0.5)")
    axes.set_ylim(0, 1)
    axes.legend()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--session", action="store_true", help="run the scripted sessions")
    parser.add_argument("--cost", action="store_true", help="measure what a preview costs")
    parser.add_argument("--one", choices=STARTS, help=argparse.SUPPRESS)
    parser.add_argument("--starts", nargs="+", choices=STARTS, default=list(STARTS))
    parser.add_argument("--seconds", type=float, default=120.0, help="per start")
    parser.add_argument("--label-mode", default="sparse")
    parser.add_argument("--nuclei", type=int, default=6)
    parser.add_argument("--brush", type=int, default=7)
    parser.add_argument("--base", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--preview-every", type=float, default=5.0)
    parser.add_argument(
        "--strokes-at", type=float, default=30.0, help="seconds after Train for the second half"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", help="write the report (Markdown) and the F1 curve (PNG) here")
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(run_session(args.one, args)), flush=True)
        return 0
    if not (args.session or args.cost):
        parser.error("choose --session and/or --cost")
    results = session(args) if args.session else []
    costs = cost(args) if args.cost else None
    text = report(results, costs, args)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        if any(r.get("curve") for r in results):
            plot(results, Path(args.out).with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
