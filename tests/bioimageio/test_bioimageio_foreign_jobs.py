"""Foreign torchscript packages through the job layer: ``predict --model foreign.zip`` and
``predict_job(PredictRequest(model=...))`` equal :func:`predict_foreign`, and write their
outputs under the same rules as this plugin's models. Needs the ``bioimageio`` extra."""

import numpy as np
import pytest
import tifffile

pytest.importorskip("bioimageio.core")

from _packages import build_coded_package, build_package

from napari_tiled_unet.bioimageio.foreign import predict_foreign
from napari_tiled_unet.cli import main
from napari_tiled_unet.jobs import PredictRequest, iter_predict_job, predict_job


@pytest.fixture
def package(tmp_path):
    (tmp_path / "pkg").mkdir()
    return build_package(tmp_path / "pkg")


@pytest.fixture
def image_path(tmp_path, rng):
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, (rng.random((70, 93)) * 1000).astype(np.float32))
    return path


def _predict(image_path, model, out, *extra):
    argv = ["predict", str(image_path), "--model", str(model), "-o", str(out), "--tile", "32"]
    return main([*argv, *extra])


def test_cli_predict_with_a_foreign_package_equals_predict_foreign(
    tmp_path, package, image_path, capsys
):
    path, _ = package
    out, probs = tmp_path / "labels.tif", tmp_path / "probs.tif"
    assert _predict(image_path, path, out, "--probabilities", str(probs), "--batch", "3") == 0
    assert "100%" in capsys.readouterr().err  # the progress bar ran per tile, to the end
    image = tifffile.imread(image_path)
    expected = predict_foreign(image, path, tile_shape=(32, 32))
    assert expected.shape == (1, 70, 93)  # one sigmoid channel: TIFF readers squeeze it
    np.testing.assert_allclose(tifffile.imread(probs), expected[0], atol=1e-6, rtol=0)
    labels = tifffile.imread(out)
    np.testing.assert_array_equal(
        labels, predict_foreign(image, path, output="labels", tile_shape=(32, 32))
    )
    assert labels.dtype == np.uint16 and 0 < labels.mean() < 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "image.tif",
        "labels.tif",
        "pkg",
        "probs.tif",
    ]


def test_predict_job_with_a_foreign_package_predicts_frame_by_frame(package, rng):
    path, _ = package
    image = (rng.random((2, 40, 50)) * 100).astype(np.float32)
    request = PredictRequest(model=path, output="probabilities", tile=32, axes="TYX")
    events = []
    job = iter_predict_job(image, request)
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            result = stop.value
            break
    assert result.output == "probabilities" and result.data.shape == (1, 2, 40, 50)
    for t in range(2):
        expected = predict_foreign(image[t], path, tile_shape=(32, 32))
        np.testing.assert_allclose(result.data[:, t], expected, atol=1e-6, rtol=0)
    done = [e.done for e in events]
    assert done == sorted(done) and done[-1] == events[-1].total > 2  # per tile, both frames
    labels = predict_job(image[0], PredictRequest(model=path, tile=32))
    assert labels.output == "labels"
    np.testing.assert_array_equal(
        labels.data, predict_foreign(image[0], path, output="labels", tile_shape=(32, 32))
    )


def test_package_code_runs_only_with_the_opt_in_flag(tmp_path, package, image_path, capsys):
    path, net = package
    coded = build_coded_package(tmp_path / "pkg", path, net)
    out = tmp_path / "labels.tif"
    assert _predict(image_path, coded, out) != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Python source shipped in the package" in err and "--trust-package-code" in err
    assert not out.exists()
    with pytest.raises(ValueError, match="Python source shipped in the package"):
        predict_job(image_path, PredictRequest(model=coded), output_path=out)
    assert not out.exists()
    assert _predict(image_path, coded, out, "--trust-package-code") == 0
    image = tifffile.imread(image_path)
    np.testing.assert_array_equal(
        tifffile.imread(out), predict_foreign(image, path, output="labels", tile_shape=(32, 32))
    )
    trusted = PredictRequest(model=coded, tile=32, trust_package_code=True)
    np.testing.assert_array_equal(predict_job(image, trusted).data, tifffile.imread(out))


def test_foreign_package_errors_leave_no_output(tmp_path, rng, capsys):
    (tmp_path / "pkg").mkdir()
    path, _ = build_package(tmp_path / "pkg", valid=True)
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, rng.random((12, 40)).astype(np.float32))
    out = tmp_path / "labels.tif"
    out.write_bytes(b"previous result")
    assert main(["predict", str(small), "--model", str(path), "-o", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "smaller than the 16 px this 'valid' package" in err
    assert out.read_bytes() == b"previous result"
    assert main(["predict", str(small), "--model", str(path), "-o", str(out), "--halo", "8"]) != 0
    assert "does not support --halo" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"does not support output 'instances'"):
        predict_job(small, PredictRequest(model=path, output="instances"), output_path=out)
    with pytest.raises(ValueError, match=r"3 channels, the model takes 1"):
        predict_job(rng.random((3, 40, 40)), PredictRequest(model=path, axes="CYX"))
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif", "pkg", "small.tif"]


def test_closing_a_foreign_job_mid_run_writes_nothing(tmp_path, package, image_path):
    path, _ = package
    out = tmp_path / "labels.tif"
    job = iter_predict_job(image_path, PredictRequest(model=path, tile=32), output_path=out)
    first, second = next(job), next(job)
    assert first.done == 0 and 0 < second.done < second.total  # a tile done, more to come
    job.close()  # what the CLI's Ctrl-C and the widget's cancel do
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tif", "pkg"]
