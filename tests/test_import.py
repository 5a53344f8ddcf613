import subprocess
import sys


def test_import_loads_no_torch_qt_or_napari():
    code = (
        "import sys, napari_tiled_unet\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui')]\n"
        "print(','.join(sorted(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_core_engine_imports_no_qt_or_napari():
    code = (
        "import sys\n"
        "import napari_tiled_unet.inference, napari_tiled_unet.model.modelfile, napari_tiled_unet.cli\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PySide2', 'magicgui')]\n"
        "print(','.join(sorted(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_api_names():
    import napari_tiled_unet as ntu

    for name in ("UNet", "predict", "iter_predict", "save_model", "load_model"):
        assert callable(getattr(ntu, name))
