import subprocess
import sys

QT_AND_NAPARI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui")


def _loaded_top_level_modules(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_loads_no_torch_qt_or_napari():
    loaded = _loaded_top_level_modules("import napari_tiled_unet")
    assert not loaded & {"torch", *QT_AND_NAPARI}


def test_core_engine_imports_no_qt_or_napari():
    loaded = _loaded_top_level_modules(
        "import napari_tiled_unet.inference, napari_tiled_unet.model.modelfile, "
        "napari_tiled_unet.cli, napari_tiled_unet.training.loop"
    )
    assert "napari_tiled_unet" in loaded
    assert not loaded & set(QT_AND_NAPARI)


def test_public_api_names():
    import napari_tiled_unet as ntu

    for name in (
        "UNet",
        "predict",
        "iter_predict",
        "save_model",
        "load_model",
        "train",
        "iter_train",
    ):
        assert callable(getattr(ntu, name))
