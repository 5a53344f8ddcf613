"""The job layer: one request, the same rules and results for every face."""

import numpy as np
import pytest
import tifffile

from _nets import tiny_unet
from napari_tiled_unet import predict, save_model
from napari_tiled_unet.errors import TiledUNetError, UserInputError
from napari_tiled_unet.jobs import (
    LayoutHints,
    PredictRequest,
    TrainImage,
    TrainRequest,
    plan_training,
    predict_job,
)


@pytest.fixture
def image(rng):
    return rng.random((3, 40, 48)).astype(np.float32)  # Z, Y, X


@pytest.mark.parametrize(
    "bad, problem",
    [
        ({"output": "outlines"}, "output must be one of"),
        ({"tile": -16}, "tile must be"),
        ({"halo": 1.5}, "halo must be"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"precision": "int8"}, "precision must be"),
    ],
)
def test_requests_refuse_bad_values_with_user_errors(bad, problem):
    with pytest.raises(UserInputError, match=problem):
        PredictRequest(**bad)


def test_auto_output_follows_the_model_label_mode(tmp_path, image):
    instance = save_model(tiny_unet(), tmp_path / "inst.pt", label_mode="instance")
    semantic = save_model(tiny_unet(), tmp_path / "sem.pt", label_mode="semantic")
    plane = image[0]
    found = predict_job(plane, PredictRequest(model=instance, device="cpu"))
    assert found.output == "instances" and found.data.dtype == np.int32
    np.testing.assert_array_equal(found.data, predict(plane, instance, output="instances"))
    found = predict_job(plane, PredictRequest(model=semantic, device="cpu"))
    assert found.output == "labels"
    np.testing.assert_array_equal(found.data, predict(plane, semantic))


def test_a_tiff_is_read_with_its_axes_and_never_overwritten(tmp_path, image):
    model = save_model(tiny_unet(), tmp_path / "m.pt")
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, image, metadata={"axes": "ZYX"})
    request = PredictRequest(model=model, output="labels", tile=64, device="cpu")
    with pytest.raises(UserInputError, match="is the input file"):
        predict_job(path, request, output_path=path)
    np.testing.assert_array_equal(tifffile.imread(path), image)  # untouched
    out, probs = tmp_path / "labels.tif", tmp_path / "probs.tif"
    result = predict_job(path, request, output_path=out, probabilities_path=probs)
    expected = predict(image, model, tile_shape=(64, 64), axes="ZYX")
    assert result.layout.axes == "ZYX" and result.path == out
    np.testing.assert_array_equal(tifffile.imread(out), expected)
    assert tifffile.imread(probs).shape == (3, *image.shape)


def test_layer_hints_decide_the_layout(tmp_path, rng):
    rgb = rng.random((32, 48, 3)).astype(np.float32)
    net = tiny_unet(in_channels=3)
    request = PredictRequest(model=net, output="probabilities", hints=LayoutHints(rgb=True))
    result = predict_job(rgb, request)
    assert result.layout.axes == "YXC"
    np.testing.assert_array_equal(
        result.data, predict(rgb, net, axes="YXC", output="probabilities")
    )


def test_training_plan_reads_layouts_once_and_fits_a_3d_tile(rng):
    from napari_tiled_unet.training import TrainConfig

    volume = rng.random((20, 64, 64)).astype(np.float32)
    labels = (volume > 0.5).astype(np.uint8)
    request = TrainRequest(TrainConfig(iterations=1), ndim=3, tile=32)
    plan = plan_training(request, [TrainImage(volume, labels, "vol", LayoutHints("ZYX"))])
    assert plan.layouts[0].axes == "ZYX" and plan.config.tile_shape[1:] == (32, 32)
    assert plan.config.tile_shape[0] <= 32
    planar = plan_training(
        TrainRequest(TrainConfig(iterations=1), ndim=2, tile=32),
        [TrainImage(volume, labels, "vol", LayoutHints("ZYX"))],
    )
    assert planar.config.tile_shape == (32, 32) and "one per Z" in planar.describe()
    with pytest.raises(UserInputError, match="thinnest volume"):
        plan_training(
            TrainRequest(TrainConfig(iterations=1), ndim=3, tile=32),
            [TrainImage(volume[:2], labels[:2], "thin", LayoutHints("ZYX"))],
        )


def test_layout_errors_name_the_labels(rng):
    from napari_tiled_unet.training import TrainConfig

    image = rng.random((5, 6, 32, 32)).astype(np.float32)
    labels = np.zeros((7, 32, 32), np.uint8)
    with pytest.raises(UserInputError, match=r"its labels have shape \(7, 32, 32\)"):
        plan_training(TrainRequest(TrainConfig()), [TrainImage(image, labels, "odd")])


def test_cli_prints_user_errors_as_one_line_and_keeps_tracebacks_for_bugs(
    tmp_path, image, capsys, monkeypatch
):
    from napari_tiled_unet import cli, jobs

    path = tmp_path / "img.tif"
    tifffile.imwrite(path, image[0])
    argv = ["predict", str(path), "-o", str(path)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip().endswith("is the input file; choose another name")
    assert "Traceback" not in err
    assert cli.main(["-v", *argv]) == 1
    assert "Traceback" in capsys.readouterr().err

    def broken(*args, **kwargs):
        raise TypeError("a bug, not the user's")

    monkeypatch.setattr(jobs, "iter_predict_job", broken)
    with pytest.raises(TypeError, match="a bug"):
        cli.main(["predict", str(path), "-o", str(tmp_path / "out.tif")])
    assert issubclass(UserInputError, TiledUNetError) and issubclass(UserInputError, ValueError)
