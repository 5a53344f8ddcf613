"""Fault campaign: hostile TIFFs and model files against the command line and ``load_model``.

Seeded mutations of small generated files (tag values, header and data bytes, truncation, IFD
offsets; model configs, metadata, weights and bytes) plus special files (tiny, empty, a FIFO,
a folder, a symlink loop, a decompression bomb, headers claiming billions of pixels). Each case
runs in a fresh folder of a temporary root, in a fresh process with a timeout and a memory
limit: ``python -m napari_tiled_unet.cli predict`` on the TIFF (with a tiny model, or with the
hostile model file), or ``load_model`` on the model file. A case is

- ``success``: exit 0 and the output written;
- ``error``: exit 1 and stderr's last line ``napari-tiled-unet: error: ...``, no traceback;
- ``traceback``: a ``Traceback`` on stderr; ``crash``: killed by a signal (e.g. the memory limit);
- ``hang``: still running at the timeout (SIGTERM, then SIGKILL);
- ``leftover``: files left beside the output or in TMPDIR; ``lost``: an input changed or vanished;
- ``other``: anything else (e.g. exit 0 without output, a multi-line error).

    python benchmarks/fault_campaign.py                     # full size: ~500 cases, ~15 min
    python benchmarks/fault_campaign.py --tiff-cases 40 --model-cases 10 --output ''
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

ERROR_PREFIX = "napari-tiled-unet: error:"
CLASSES = ("success", "error", "traceback", "crash", "hang", "leftover", "lost", "other")
RESULTS = Path(__file__).parent / "results" / "fault_campaign.md"
#: Tag values tried besides the type's largest: zero sizes, packed bit depths, 16/32-bit edges.
INTERESTING = (0, 1, 2, 3, 7, 12, 14, 255, 65535, 2**31 - 1)
LOAD_SCRIPT = """
import sys
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.model.modelfile import load_model
try:
    load_model(sys.argv[1])
except (UserInputError, FileNotFoundError) as err:
    print("napari-tiled-unet: error:", err, file=sys.stderr)
    sys.exit(1)
"""


@dataclass
class Case:
    """One run: ``files`` (name -> bytes, or a callable making it in the case folder)."""

    name: str
    group: str
    files: dict = field(default_factory=dict)
    kind: str = "predict"  # "predict" (CLI on input.tif), "model" (CLI with --model), "load"
    outcome: str = ""
    detail: str = ""
    seconds: float = 0.0


# --- TIFFs --------------------------------------------------------------------------------


def base_tiffs(rng: np.random.Generator) -> dict[str, bytes]:
    """Five layouts of a 96 x 112 uint16 image (and a 3-plane stack)."""
    image = rng.integers(0, 4000, (96, 112), dtype=np.uint16)
    layouts = {
        "strips": {"rowsperstrip": 16},
        "zlib-strips": {"compression": "zlib", "rowsperstrip": 32},
        "zlib-tiles": {"compression": "zlib", "tile": (32, 32)},
        "bigtiff-tiles": {"bigtiff": True, "tile": (48, 48)},
        "stack": {"imagej": True, "metadata": {"axes": "ZYX"}},
    }
    out = {}
    for name, kwargs in layouts.items():
        buf = io.BytesIO()
        data = np.stack([image, image[::-1], image[:, ::-1]]) if name == "stack" else image
        tifffile.imwrite(buf, data, **kwargs)
        out[name] = buf.getvalue()
    return out


def tag_slots(data: bytes) -> list[tuple[str, int, str, int]]:
    """``(tag name, file offset, struct code, count)`` of the first page's numeric tags."""
    codes = {1: "B", 3: "H", 4: "I", 8: "h", 9: "i", 16: "Q", 17: "q"}
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        bo = tif.byteorder
        return [
            (tag.name, tag.valueoffset, bo + codes[int(tag.dtype)], tag.count)
            for tag in tif.pages[0].tags
            if int(tag.dtype) in codes
        ]


def mutate_tiff(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One seeded mutation of a TIFF: a tag value, header or data bytes, a cut, an IFD offset."""
    buf = bytearray(data)
    op = rng.choice(["tag", "tag", "tag", "header", "data", "cut", "ifd"])
    if op == "tag":
        name, offset, code, count = tag_slots(data)[rng.integers(len(tag_slots(data)))]
        size = struct.calcsize(code)
        top = 2 ** (8 * size) - 1
        if code[-1].islower():
            top //= 2
        random_value = rng.integers(min(top, 2**62))
        value = int(rng.choice([*INTERESTING, top, top - 1, random_value]))
        value = min(value, top)
        k = int(rng.integers(min(count, 64)))
        struct.pack_into(code, buf, offset + k * size, value)
        return f"{name}[{k}]={value}", bytes(buf)
    if op == "header":
        for _ in range(int(rng.integers(1, 9))):
            buf[int(rng.integers(min(len(buf), 512)))] = int(rng.integers(256))
        return "header-bytes", bytes(buf)
    if op == "data":
        for _ in range(int(rng.integers(1, 33))):
            buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
        return "data-bytes", bytes(buf)
    if op == "cut":
        n = int(rng.integers(len(buf)))
        return f"cut@{n}", bytes(buf[:n])
    big = buf[2:4] in (b"\x2b\x00", b"\x00\x2b")
    code = ("<" if buf[:2] == b"II" else ">") + ("Q" if big else "I")
    value = int(rng.choice([0, 8, 1, len(buf) - 2, 2**31, int(rng.integers(len(buf)))]))
    struct.pack_into(code, buf, 8 if big else 4, value)
    return f"ifd@{value}", bytes(buf)


def bigtiff_empty_tiles(width: int, length: int, tile: int = 1024) -> bytes:
    """A BigTIFF whose tiles are all empty (offset and byte count 0): a sparse file."""
    n = -(-width // tile) * -(-length // tile)
    shorts = ((258, 8), (259, 1), (262, 1), (277, 1), (322, tile), (323, tile))
    entries = [(256, 16, 1, width), (257, 16, 1, length)]
    entries += [(code, 3, 1, value) for code, value in shorts]
    entries += [(324, 16, n, None), (325, 16, n, None)]  # tile offsets, byte counts
    ifd_size = 8 + 20 * len(entries) + 8
    arrays = 16 + ifd_size
    out = bytearray(b"II" + struct.pack("<HHHQ", 43, 8, 0, 16))
    out += struct.pack("<Q", len(entries))
    for k, (code, dtype, count, value) in enumerate(entries):
        if value is None:  # offsets, then byte counts, all zero
            value = arrays + (k - 8) * 8 * n
        out += struct.pack("<HHQQ", code, dtype, count, value)
    out += struct.pack("<Q", 0)
    return bytes(out + bytes(16 * n))


def special_tiffs(bases: dict[str, bytes], bomb: bool = True) -> list[Case]:
    """Hand-made hostile inputs: tiny, huge claims, a bomb (512 MiB to make), packed bits,
    non-files."""
    cases = []
    strips = bases["strips"]
    for n in (0, 2, 4, 8, 12, 16):
        cases.append(Case(f"first {n} bytes", "special", {"input.tif": strips[:n]}))
    cases.append(Case("not a TIFF", "special", {"input.tif": b"hello world\n" * 10}))
    for layout, data in bases.items():
        slots = {s[0]: s for s in tag_slots(data)}
        for tag, value in (
            ("ImageLength", 2**32 - 1),
            ("ImageWidth", 0),
            ("RowsPerStrip", 0),
            ("TileWidth", 0),
            ("SamplesPerPixel", 0),
            ("BitsPerSample", 12),
        ):
            if tag not in slots:
                continue
            buf = bytearray(data)
            _, offset, code, _ = slots[tag]
            struct.pack_into(code, buf, offset, min(value, 2 ** (8 * struct.calcsize(code)) - 1))
            cases.append(Case(f"{layout} {tag}={value}", "special", {"input.tif": bytes(buf)}))
    cases.append(
        Case(
            "BigTIFF of empty tiles claiming 200000x200000",
            "special",
            {"input.tif": bigtiff_empty_tiles(200000, 200000)},
        )
    )
    if bomb:  # one zlib strip inflating to 512 MiB from a file of ~500 KB
        buf = io.BytesIO()
        zeros = np.zeros((8192, 65536), np.uint8)
        tifffile.imwrite(buf, zeros, compression="zlib", rowsperstrip=8192)
        cases.append(Case("zlib strip bomb 512 MiB", "special", {"input.tif": buf.getvalue()}))
    cases.append(Case("FIFO named input.tif", "special", {"input.tif": "fifo"}))
    cases.append(Case("folder named input.tif", "special", {"input.tif": "dir"}))
    cases.append(Case("symlink loop input.tif", "special", {"input.tif": "loop"}))
    return cases


# --- model files ----------------------------------------------------------------------------


def tiny_model(path: Path) -> None:
    """A small depth-2 base-4 network with percentile normalisation, as a model file."""
    import torch

    from napari_tiled_unet.model.modelfile import save_model
    from napari_tiled_unet.model.unet import UNet

    torch.manual_seed(0)
    save_model(UNet(1, 2, depth=2, base_channels=4), path, normalization={"mode": "percentile"})


def model_cases(base: Path, n: int, rng: np.random.Generator) -> list[Case]:
    """``n`` hostile model files: named mutations of the payload, then random bytes."""
    import torch

    payload = torch.load(base, weights_only=True)
    raw = base.read_bytes()

    def saved(edit) -> bytes:
        p = {k: (dict(v) if isinstance(v, dict) else v) for k, v in payload.items()}
        p["state_dict"] = {k: v.clone() for k, v in payload["state_dict"].items()}
        edit(p)
        buf = io.BytesIO()
        torch.save(p, buf)
        return buf.getvalue()

    def set_config(key, value):
        return lambda p: p["config"].__setitem__(key, value)

    def set_meta(key, value):
        return lambda p: p["metadata"].__setitem__(key, value)

    def weights(fn):
        return lambda p: p["state_dict"].update({k: fn(v) for k, v in p["state_dict"].items()})

    first = next(iter(payload["state_dict"]))
    edits = {
        "base_channels 20000": set_config("base_channels", 20000),
        "base_channels 0": set_config("base_channels", 0),
        "base_channels '16'": set_config("base_channels", "16"),
        "depth 50": set_config("depth", 50),
        "in_channels 10**9": set_config("in_channels", 10**9),
        "num_classes 10**9": set_config("num_classes", 10**9),
        "ndim 4": set_config("ndim", 4),
        "config a list": lambda p: p.__setitem__("config", [1, 2]),
        "format_version '1'": lambda p: p.__setitem__("format_version", "1"),
        "format_version 99": lambda p: p.__setitem__("format_version", 99),
        "format_version None": lambda p: p.__setitem__("format_version", None),
        "no format": lambda p: p.pop("format"),
        "metadata a list": lambda p: p.__setitem__("metadata", [1]),
        "normalization junk": set_meta("normalization", {"mode": "magic"}),
        "class_names 5": set_meta("class_names", 5),
        "tile_shape strings": set_meta("tile_shape", ["a"]),
        "channels [-1]": set_meta("channels", [-1]),
        "all NaN weights": weights(lambda v: torch.full_like(v, float("nan"))),
        "all inf weights": weights(lambda v: torch.full_like(v, float("inf"))),
        "one missing tensor": lambda p: p["state_dict"].pop(first),
        "an extra tensor": lambda p: p["state_dict"].__setitem__("extra.weight", torch.ones(3)),
        "a wrong shape": lambda p: p["state_dict"].__setitem__(first, torch.ones(2, 2)),
        "int weights": weights(lambda v: v.to(torch.int64)),
        "state_dict a list": lambda p: p.__setitem__("state_dict", [1]),
        "state_dict of ints": lambda p: p.__setitem__("state_dict", {first: 3}),
        "no state_dict": lambda p: p.pop("state_dict"),
        "a tensor payload": lambda p: p.clear(),
    }
    files = {name: saved(edit) for name, edit in edits.items()}
    files["a pickled os.system call"] = _evil_pickle()
    files["empty file"] = b""
    files["text file"] = b"not a model\n"
    while len(files) < n:
        buf = bytearray(raw)
        if rng.random() < 0.5:
            cut = int(rng.integers(len(buf)))
            name = f"cut@{cut}"
            buf = buf[:cut]
        else:
            spots = rng.integers(len(buf), size=int(rng.integers(1, 17)))
            for s in spots:
                buf[int(s)] = int(rng.integers(256))
            name = f"{len(spots)} bytes flipped (seeded {int(spots[0])})"
        files[name] = bytes(buf)
    return [Case(name, "model", {"model.pt": data}) for name, data in list(files.items())[:n]]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _evil_pickle() -> bytes:
    """A torch file whose unpickling would run a shell command (weights_only must refuse it)."""
    import torch

    buf = io.BytesIO()
    torch.save({"format": _Evil()}, buf)
    return buf.getvalue()


# --- running --------------------------------------------------------------------------------


def _materialise(folder: Path, files: dict) -> dict[Path, str]:
    """Write the case's files; return the regular files' hashes (to detect lost input)."""
    hashes = {}
    for name, content in files.items():
        path = folder / name
        if content == "fifo":
            os.mkfifo(path)
        elif content == "dir":
            path.mkdir()
        elif content == "loop":
            os.symlink(name, path)
        else:
            path.write_bytes(content)
            hashes[path] = hashlib.sha256(content).hexdigest()
    return hashes


def _limit_memory(limit: int):
    def preexec():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return preexec


def run_case(case: Case, root: Path, model: Path, timeout: float, memory: int) -> Case:
    """Run ``case`` in a fresh folder under ``root``; set its outcome and return it."""
    folder = root / re.sub(r"[^A-Za-z0-9]+", "_", case.name)[:60]
    folder = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=root))
    tmp = folder / "tmp"
    tmp.mkdir()
    hashes = _materialise(folder, case.files)
    python = sys.executable
    if case.kind == "load":
        cmd = [python, "-c", LOAD_SCRIPT, "model.pt"]
        expected = set()
    else:
        source = "model.pt" if case.kind == "model" else str(model)
        image = "input.tif" if "input.tif" in case.files else str(model.parent / "a.tif")
        cmd = [python, "-m", "napari_tiled_unet.cli", "predict", image, "-o", "out.tif"]
        cmd += ["--model", source]
        expected = {"out.tif"}
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONWARNINGS": "ignore"}
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_limit_memory(memory),
    )
    hung = False
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        hung = True
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
    case.seconds = time.monotonic() - start
    stderr = err.decode(errors="replace")
    lines = [ln for ln in re.split(r"[\r\n]+", stderr) if ln.strip()]
    last = lines[-1] if lines else ""
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*")} - {"tmp"}
    left = present - set(case.files) - (expected if proc.returncode == 0 else set())
    lost = [p for p, h in hashes.items() if not p.is_file() or _sha(p) != h]
    if hung:
        case.outcome = "hang"
    elif proc.returncode < 0:
        case.outcome = "crash"
        last = f"killed by {signal.Signals(-proc.returncode).name}; {last}"
    elif "Traceback" in stderr:
        case.outcome = "traceback"
        last = next((ln for ln in reversed(lines) if not ln.startswith(" ")), last)
    elif lost:
        case.outcome = "lost"
    elif left:
        case.outcome = "leftover"
        last = f"left {sorted(left)[:3]}; {last}"
    elif proc.returncode == 0 and expected <= present:
        case.outcome = "success"
    elif proc.returncode == 1 and last.startswith(ERROR_PREFIX):
        case.outcome = "error"
    else:
        case.outcome = "other"
        last = f"exit {proc.returncode}; {last}"
    case.detail = last[:300]
    shutil.rmtree(folder, ignore_errors=True)
    return case


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_cases(
    seed: int, tiff_cases: int, model_cases_n: int, fixtures: Path, bomb: bool = True
) -> list[Case]:
    """The campaign: seeded TIFF mutations, special files, and model files (loaded and used).

    Writes the tiny model and a plain TIFF into ``fixtures`` (a folder the cases only read).
    """
    rng = np.random.default_rng(seed)
    bases = base_tiffs(rng)
    (fixtures / "a.tif").write_bytes(bases["strips"])
    tiny_model(fixtures / "tiny.pt")
    cases = [
        Case(f"{name} (unmodified)", name, {"input.tif": data}) for name, data in bases.items()
    ]
    names = list(bases)
    for i in range(tiff_cases):
        layout = names[i % len(names)]
        what, data = mutate_tiff(bases[layout], rng)
        cases.append(Case(f"{layout} {what}", layout, {"input.tif": data}))
    cases += special_tiffs(bases, bomb)
    for case in model_cases(fixtures / "tiny.pt", model_cases_n, rng):
        cases.append(Case(case.name, "model: load_model", case.files, kind="load"))
        cases.append(Case(case.name, "model: CLI --model", case.files, kind="model"))
    return cases


def run_campaign(
    cases: list[Case], fixtures: Path, *, jobs: int = 2, timeout: float = 60, memory: int = 6
) -> list[Case]:
    """Run every case (``jobs`` at a time, ``memory`` GiB address space each)."""
    root = Path(tempfile.mkdtemp(prefix="fault-campaign-runs."))
    try:
        with ThreadPoolExecutor(jobs) as pool:
            return list(
                pool.map(
                    lambda c: run_case(c, root, fixtures / "tiny.pt", timeout, memory * 2**30),
                    cases,
                )
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(cases: list[Case], title: str) -> str:
    """Markdown: counts per group and class, then every case that is not success or error."""
    groups = collections.defaultdict(collections.Counter)
    for c in cases:
        groups[c.group][c.outcome] += 1
        groups["all"][c.outcome] += 1
    lines = [title, "", "| group | cases | " + " | ".join(CLASSES) + " |"]
    lines.append("|---" * (len(CLASSES) + 2) + "|")
    for g, counts in sorted(groups.items(), key=lambda item: item[0] == "all"):
        row = [g, str(sum(counts.values()))] + [str(counts[k]) for k in CLASSES]
        lines.append("| " + " | ".join(row) + " |")
    bad = [c for c in cases if c.outcome not in ("success", "error")]
    lines += ["", f"Cases that are neither success nor a one-line error: {len(bad)}", ""]
    lines += [f"- [{c.outcome}] {c.group}: {c.name} ({c.seconds:.1f} s): `{c.detail}`" for c in bad]
    slow = sorted(cases, key=lambda c: -c.seconds)[:5]
    lines += ["", "Slowest cases: " + "; ".join(f"{c.name} {c.seconds:.1f} s" for c in slow)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiff-cases", type=int, default=400, help="mutated TIFFs")
    parser.add_argument("--model-cases", type=int, default=60, help="model files (each run twice)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60, help="seconds per case")
    parser.add_argument("--memory", type=int, default=6, help="GiB address space per case")
    parser.add_argument("--output", default=str(RESULTS), help="Markdown file ('' for none)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fault-campaign.") as fixtures:
        fixtures = Path(fixtures)
        cases = build_cases(args.seed, args.tiff_cases, args.model_cases, fixtures)
        start = time.monotonic()
        run_campaign(cases, fixtures, jobs=args.jobs, timeout=args.timeout, memory=args.memory)
    title = (
        f"# Fault campaign (seed {args.seed}, {len(cases)} cases, "
        f"{time.monotonic() - start:.0f} s, {args.jobs} at a time)"
    )
    text = report(cases, title)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
