"""The layering the README's Architecture section promises, checked on the source."""

import ast
import subprocess
import sys
from pathlib import Path

import napari_tiled_unet

PACKAGE = Path(napari_tiled_unet.__file__).parent
# What the base layers may import from the package (besides themselves).
BASE = ("model", "tiling", "io")
BASE_MAY_IMPORT = {"model", "tiling", "io", "errors", "events", "config", "normalization"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def test_base_layers_import_nothing_above_them():
    wrong = []
    for path, tree in _modules():
        layer = path.relative_to(PACKAGE).parts[0]
        if layer not in BASE:
            continue
        for module, names in _imports(tree):
            parts = module.split(".")
            if parts[0] != "napari_tiled_unet":
                continue
            target = parts[1] if len(parts) > 1 else names[0]
            if target not in BASE_MAY_IMPORT and target != "__version__":
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module} {names}")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_modules_underscore_names():
    wrong = []
    for path, tree in _modules():
        for module, names in _imports(tree):
            if module.startswith("napari_tiled_unet"):
                private = [n for n in names if n.startswith("_") and n != "__version__"]
                if private:
                    wrong.append(f"{path.relative_to(PACKAGE)}: {module} {private}")
    assert not wrong, "\n".join(wrong)


def test_source_modules_stay_small():
    sizes = {
        str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")
    }
    assert max(sizes.values()) <= 500, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_faces_and_jobs_load_no_torch_qt_or_napari():
    code = (
        "import sys, napari_tiled_unet.jobs, napari_tiled_unet.cli\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'napari', 'qtpy', "
        "'PyQt5', 'PyQt6', 'PySide6'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_only_faces_import_the_job_layer_and_only_napari_code_imports_qt():
    wrong = []
    for path, tree in _modules():
        where = path.relative_to(PACKAGE).parts
        face = where[0] in ("cli.py", "cli_train.py", "_napari", "jobs")
        for module, _names in _imports(tree):
            top = module.split(".")
            if not face and top[0] == "napari_tiled_unet" and top[1:2] in (["jobs"], ["cli"]):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
            gui = top[0] in ("napari", "magicgui", "qtpy") or "_napari" in top
            if gui and where[0] != "_napari":
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, "\n".join(wrong)
