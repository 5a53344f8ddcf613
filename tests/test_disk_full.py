"""A full disk or a file-size limit while writing the output: one clear line, nothing left behind.

The command line runs in a child process whose writes really fail: with a file-size limit
(``RLIMIT_FSIZE``, so writes fail with ``EFBIG``; reading is unaffected) or, where user and
mount namespaces are allowed, with its output folder on a tiny tmpfs (``ENOSPC``).
"""

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from _nets import tiny_unet
from napari_tiled_unet import save_model
from napari_tiled_unet.cli import main

CLI = [sys.executable, "-m", "napari_tiled_unet.cli", "predict", "--device", "cpu"]


@pytest.fixture
def inputs(tmp_path, rng):
    """(folder with the input and the model, input path, model path); outputs go elsewhere."""
    src = tmp_path / "in"
    src.mkdir()
    model = save_model(tiny_unet("same", depth=2), src / "model.pt")
    image = src / "image.tif"
    tifffile.imwrite(image, (rng.random((300, 300)) * 4000).astype(np.uint16))
    return src, image, model


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _file_size_limit(limit):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail with EFBIG rather than die
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def _check_error(result, out, reason):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"napari-tiled-unet: error: cannot write {out}: {reason}"), last
    return last


def _sizes(tmp_path, image, model):
    """Largest temporary zarr chunk file and size of the finished TIFF, for this input."""
    ref = tmp_path / "ref"
    ref.mkdir()
    for name in ("r.zarr", "r.tif"):
        assert main(["predict", str(image), "--model", str(model), "-o", str(ref / name)]) == 0
    chunks = [p.stat().st_size for p in (ref / "r.zarr").rglob("*") if p.is_file()]
    sizes = max(chunks), (ref / "r.tif").stat().st_size
    shutil.rmtree(ref)
    return sizes


@pytest.mark.parametrize(
    ("suffix", "stage", "previous"),
    [
        (".tif", "chunks", False),  # the temporary tile store already fails
        (".tif", "tiff", True),  # the tiles fit; the final TIFF does not; an old output stays
        (".zarr", "chunks", False),
    ],
)
def test_file_size_limit(tmp_path, inputs, suffix, stage, previous):
    src, image, model = inputs
    largest_chunk, tiff_size = _sizes(tmp_path, image, model)
    if stage == "chunks":
        limit = 1024
    else:
        assert largest_chunk + 1024 < tiff_size, (largest_chunk, tiff_size)
        limit = (largest_chunk + tiff_size) // 2
    dest = tmp_path / "dest"
    dest.mkdir()
    out = dest / f"labels{suffix}"
    if previous:
        out.write_bytes(b"previous result")
    before = _digest(image)
    result = subprocess.run(
        [*CLI, str(image), "--model", str(model), "-o", str(out)],
        preexec_fn=_file_size_limit(limit),
        capture_output=True,
        text=True,
        timeout=300,
    )
    last = _check_error(result, out, "a file would exceed the size limit")
    assert "[Errno 27] File too large" in last
    if previous:
        assert last.endswith(f"{out} was left as it was")
        assert out.read_bytes() == b"previous result"
        assert [p.name for p in dest.iterdir()] == [out.name]
    else:
        assert last.endswith(f"nothing was written under {out}")
        assert list(dest.iterdir()) == []  # no output, no temporaries
    assert _digest(image) == before
    assert sorted(p.name for p in src.iterdir()) == ["image.tif", "model.pt"]


# Inside a private user+mount namespace, mount a two-page tmpfs on the output folder (the
# output's largest chunk alone needs four), run the command there and report what the folder
# holds afterwards (the mount dies with the namespace).
NAMESPACE_SCRIPT = """
mount -t tmpfs -o size=8k tmpfs "$1" || exit 77
shift
"$@"
rc=$?
echo "left: $(ls -A "$DEST" | tr '\\n' ' ')"
exit $rc
"""
UNSHARE = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", NAMESPACE_SCRIPT, "sh"]


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare (util-linux)")
@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_disk_full(tmp_path, inputs, suffix):
    src, image, model = inputs
    dest = tmp_path / "dest"
    dest.mkdir()
    out = dest / f"labels{suffix}"
    before = _digest(image)
    result = subprocess.run(
        [*UNSHARE, str(dest), *CLI, str(image), "--model", str(model), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DEST": str(dest)},
    )
    if result.returncode == 77 or "unshare:" in result.stderr:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {result.stderr.strip()}")
    last = _check_error(result, out, "the disk is full")
    assert "[Errno 28] No space left on device" in last
    assert last.endswith(f"nothing was written under {out}")
    assert result.stdout.strip() == "left:"  # no output, no temporaries on the full disk
    assert list(dest.iterdir()) == []
    assert _digest(image) == before
    assert sorted(p.name for p in src.iterdir()) == ["image.tif", "model.pt"]
