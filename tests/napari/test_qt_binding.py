"""The Qt binding: the one napari recommends, offered through extras, never a base dependency."""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
BINDINGS = ("pyqt5", "pyqt6", "pyside2", "pyside6")


def _names(requirements: list[str]) -> list[str]:
    return [
        r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("!")[0].strip().lower()
        for r in requirements
    ]


def test_qt_is_an_extra_not_a_base_dependency():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras = project["optional-dependencies"]
    assert not set(_names(project["dependencies"])) & set(BINDINGS)
    assert "pyqt6" in _names(extras["gui"])
    assert "napari-tiled-unet[dask,gui]" in extras["all"]  # napari[all] also brings its Qt
    assert "napari-tiled-unet[gui]" in extras["test"]
    assert "pyqt5" not in _names(extras["test"])


def test_the_tests_run_on_the_binding_napari_recommends():
    # napari 0.9 shows "support for the PyQt5 backend is deprecated" at every start with PyQt5.
    # (An environment made before the `gui` extra may still hold PyQt5, which qtpy picks first:
    # `pip uninstall PyQt5` there.)
    from qtpy import API_NAME

    assert API_NAME == "PyQt6"
