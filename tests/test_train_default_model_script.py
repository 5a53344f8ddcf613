"""benchmarks/train_default_model.sh makes the default kind of model from any image/label folder,
so the bundled sample data can be swapped for another training set (issue 15 §7)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_tiled_unet import load_model
from napari_tiled_unet.model.modelfile import default_model_path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "train_default_model.sh"
FAST = ["--iterations", "1", "--tile", "64", "--batch", "1", "--base-channels", "4", "--depth", "2"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args):
    env = dict(os.environ)
    # The console script of this interpreter's environment, running this checkout's sources.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env
    )


def test_any_folder_of_image_and_label_pairs_trains_an_instance_model(tmp_path):
    sample = default_model_path().parent
    image = tifffile.imread(sample / "synthetic_nuclei.tif")
    labels = tifffile.imread(sample / "synthetic_nuclei_labels.tif")
    folder = tmp_path / "my set"  # a space in the path must not split it
    folder.mkdir()
    for name, rows in (("top", slice(0, 128)), ("bottom", slice(128, 256))):
        tifffile.imwrite(folder / f"{name}.tif", image[rows])
        tifffile.imwrite(folder / f"{name}_labels.tif", labels[rows])
    out = tmp_path / "model.pt"
    done = _run(out, folder, *FAST, "--validate-every", "1", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    model = load_model(out)
    assert model.info.label_mode == "instance" and model.info.training["num_pairs"] == 2


def test_a_folder_without_pairs_is_refused(tmp_path):
    done = _run(tmp_path / "model.pt", tmp_path)
    assert done.returncode == 2 and "no NAME.tif + NAME_labels.tif pairs" in done.stderr


def test_the_default_recipe_trains_on_every_source_but_the_reserved_one(tmp_path):
    """Issue 17: the bundled model's recipe (here at a toy budget) writes a model that records
    what it was trained on, and never trains on the DSB 2018 image kept for evaluation."""
    out = tmp_path / "default.pt"
    script = ROOT / "benchmarks" / "crossdomain_eval.py"
    options = ["--smoke", "--no-folds", "--no-bundled", "--default-model", str(out)]
    options += ["--validate-every", "200"]  # the validated variant (--smoke validates every step)
    done = subprocess.run(
        [sys.executable, str(script), *options],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr
    info = load_model(out).info
    data = info.training["data"]
    assert "HeLa" in data and "CHO" in data and "synthetic" in data and "DSB" not in data
    assert info.training["config"]["augment"]["appearance"] is True
    assert info.training["validation"] == "held-out images"
    assert info.training["best_step"] in [step for step, _ in info.training["validation_curve"]]
    assert info.object_diameter and info.min_object_size
    assert "default model (trained without DSB2018)" in done.stdout


def test_the_recipe_validates_on_held_out_images_of_the_training_sources_only():
    """The step count is chosen on images of the training sources that are not trained on,
    never on a source's evaluation images (issue 17: no look at what is scored)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from crossdomain_eval import load_sources, validation_split
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    for source in load_sources(smoke=False, synthetic_train=2):
        fit, held = validation_split(source)
        assert fit and held, source.name
        for image, labels in held:
            assert image.shape == labels.shape and labels.max() > 0
            assert not any(_overlaps(image, train) for train, _ in fit), source.name
            if source.eval is not source.train:  # HeLa and synthetic have their own eval images
                assert not any(_overlaps(image, test) for test, _ in source.eval), source.name
        if len(source.train) == 1:  # DSB 2018: two halves of the one image
            (left, _), (right, _) = fit[0], held[0]
            np.testing.assert_array_equal(np.hstack([left, right]), source.train[0][0])


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` equals ``b`` or is a window of it (rows and columns)."""
    if a.shape == b.shape:
        return bool(np.array_equal(a, b))
    if a.shape[0] > b.shape[0] or a.shape[1] > b.shape[1]:
        return False
    windows = np.lib.stride_tricks.sliding_window_view(b, a.shape)
    return bool((windows == a).all(axis=(-2, -1)).any())
