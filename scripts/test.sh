#!/usr/bin/env bash
# Set up a fresh machine and run the whole test suite (README's test command; CI runs it).
# Installs Debian's xvfb (napari needs OpenGL and an X server), a virtual environment in .venv
# with the CPU build of PyTorch and the test extras, checks lint and the packaged napari
# manifest, then runs pytest under xvfb-run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v xvfb-run >/dev/null || ! ldconfig -p | grep -q 'libEGL.so.1'; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        xvfb xauth libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0 \
        libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
        libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build first: an unpinned torch would pull a multi-gigabyte CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
# A .venv made before the `gui` extra may hold PyQt5, which qtpy would pick before PyQt6.
.venv/bin/python -m pip uninstall -y -q PyQt5 PyQt5-Qt5 PyQt5-sip 2>/dev/null || true
# bioimage.io core without its dependencies: it pins bioimageio.spec 0.5.12.0, which fails
# under pydantic 2.14; the [bioimageio] extra (in [test]) installs spec 0.5.14.3 and the rest.
.venv/bin/python -m pip install -q --no-deps "bioimageio.core==0.11.0"

.venv/bin/ruff check src tests benchmarks
.venv/bin/npe2 validate napari-tiled-unet

# The manifest, sample data and default model must also be found from a built wheel.
rm -rf dist .wheel-venv
.venv/bin/python -m build --wheel --outdir dist . >/dev/null
"$PY" -m venv .wheel-venv
.wheel-venv/bin/python -m pip install -q "torch==2.13.0"
.wheel-venv/bin/python -m pip install -q dist/*.whl
(cd /tmp && "$OLDPWD/.wheel-venv/bin/python" - <<'PY'
import importlib.resources as r
from npe2 import PluginManager

pm = PluginManager.instance()
pm.discover()
manifest = pm.get_manifest("napari-tiled-unet")
assert manifest.contributions.widgets, "no widgets in the installed manifest"
data = r.files("napari_tiled_unet") / "sample_data"
assert (data / "default_model.pt").is_file(), "default model missing from the wheel"
print("wheel: manifest", manifest.name, "with", len(manifest.contributions.widgets), "widgets; sample data ok")
PY
)
.wheel-venv/bin/npe2 validate napari-tiled-unet
rm -rf .wheel-venv dist

xvfb-run -a .venv/bin/python -m pytest -p no:cacheprovider "$@"
