"""Prediction with a typical object diameter: rescaled to the model's training size and
mapped back; ``diameter="auto"``; the command line's ``--diameter``."""

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from _nets import tiny_unet
from napari_tiled_unet import inference, predict, save_model
from napari_tiled_unet.cli import main
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.jobs import PredictRequest, predict_job
from napari_tiled_unet.metrics import object_f1
from napari_tiled_unet.object_size import equivalent_diameter, object_sizes
from napari_tiled_unet.rescale import check_diameter, resample_linear, resample_nearest

TRAINED = 10.0  # the test models' training object diameter (px)
OPTIONS = dict(tile_shape=(64, 64), device="cpu")


def disc_image(shape, diameter, spacing):
    """Separate bright discs of ``diameter`` px on a grid, and their object ids."""
    labels = np.zeros(shape, np.int32)
    yy, xx = np.indices(shape)
    k = 0
    for y in range(spacing // 2, shape[0] - diameter // 2, spacing):
        for x in range(spacing // 2, shape[1] - diameter // 2, spacing):
            k += 1
            labels[(yy - y) ** 2 + (xx - x) ** 2 <= (diameter / 2) ** 2] = k
    return (labels > 0).astype(np.float32) * 1000 + 100, labels


@pytest.fixture
def model(tmp_path):
    return save_model(
        tiny_unet(num_classes=3),
        tmp_path / "m.pt",
        label_mode="instance",
        object_diameter=TRAINED,
        min_object_size=10,
    )


def size_selective_predict(seen):
    """Stands in for a network that knows only its training object size: objects (bright
    components) within 30 % of TRAINED px are found, others are missed. Records the images
    it is shown."""

    def fake(image, model=None, *, output="labels", **kwargs):
        seen.append(np.asarray(image))
        labels, n = ndi.label(np.asarray(image) > 550)
        diameters = equivalent_diameter(np.bincount(labels.ravel(), minlength=n + 1), 2)
        keep = np.abs(diameters / TRAINED - 1) <= 0.3
        keep[0] = False
        found = np.where(keep[labels], labels, 0).astype(np.int32)
        if output == "probabilities":
            return np.stack([found == 0, found > 0, np.zeros_like(found, bool)]).astype(np.float32)
        yield from ()
        return found

    return fake


@pytest.mark.parametrize("diameter", [20, "20", "auto"])
def test_diameter_rescales_objects_to_the_training_size(monkeypatch, model, diameter):
    seen = []
    image, truth = disc_image((120, 100), 20, 30)  # objects twice the training size
    real = inference.iter_predict
    monkeypatch.setattr(inference, "iter_predict", size_selective_predict(seen))
    plain = inference.run_to_completion(inference.iter_predict(image, model, output="instances"))
    assert object_f1(truth, plain) == 0.0  # at 2x the "network" finds nothing
    seen.clear()
    net = inference.resolve_model(model)
    job = real(image, net, output="instances", diameter=diameter)
    found = inference.run_to_completion(job)
    assert found.shape == truth.shape and found.dtype == np.int32
    assert object_f1(truth, found) == 1.0
    shown = seen[-1]  # the last image shown is the rescaled one
    assert shown.shape == pytest.approx((60, 50), rel=0.06)  # auto: measured 20.6 px
    sizes = object_sizes(ndi.label(shown > 550)[0])
    assert np.median(equivalent_diameter(sizes, 2)) == pytest.approx(TRAINED, abs=1.5)


def test_every_output_comes_back_on_the_image_grid(model, rng):
    image = (rng.random((2, 75, 61)) * 4000).astype(np.uint16)  # T, Y, X
    for output, shape in [
        ("labels", (2, 75, 61)),
        ("instances", (2, 75, 61)),
        ("probabilities", (3, 2, 75, 61)),
    ]:
        result = predict(image, model, axes="TYX", output=output, diameter=17, **OPTIONS)
        assert result.shape == shape, output
    probabilities = predict(image, model, axes="TYX", output="probabilities", diameter=17)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1, atol=1e-4)
    out = np.zeros((2, 75, 61), np.int32)
    assert predict(image, model, axes="TYX", output="instances", diameter=5, out=out) is out
    assert out.max() > 0


def test_no_diameter_is_plain_prediction(model, rng):
    image = (rng.random((64, 64)) * 4000).astype(np.uint16)
    expected = predict(image, model, output="instances", **OPTIONS)
    for off in (None, 0, "", "0"):
        np.testing.assert_array_equal(
            predict(image, model, output="instances", diameter=off, **OPTIONS), expected
        )
    # The training diameter itself: nothing to rescale.
    np.testing.assert_array_equal(
        predict(image, model, output="instances", diameter=TRAINED, **OPTIONS), expected
    )


def test_resampling_helpers():
    labels = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(resample_nearest(labels, (6, 8))[::2, ::2], labels)
    np.testing.assert_array_equal(
        resample_nearest(resample_nearest(labels, (6, 8)), (3, 4)), labels
    )
    ramp = np.tile(np.arange(8, dtype=np.float32), (4, 1))
    assert resample_linear(ramp, (4, 16)).dtype == np.float32
    assert resample_linear(ramp, (4, 16))[0, 8] == pytest.approx(ramp[0, 4], abs=0.5)


@pytest.mark.parametrize("bad", ["abc", -3, float("nan"), "inf", True])
def test_bad_diameters_are_refused(bad):
    with pytest.raises(UserInputError, match="diameter"):
        check_diameter(bad)
    with pytest.raises(UserInputError, match="diameter"):
        PredictRequest(diameter=bad)
    assert check_diameter(" Auto ") == "auto" and check_diameter("12.5") == 12.5


def test_model_without_a_diameter_is_refused(tmp_path, rng):
    image = (rng.random((64, 64)) * 4000).astype(np.uint16)
    bare = save_model(tiny_unet(num_classes=3), tmp_path / "bare.pt", label_mode="instance")
    with pytest.raises(UserInputError, match="stores no training object diameter"):
        predict(image, bare, output="instances", diameter=20)
    with pytest.raises(UserInputError, match="stores no training object diameter"):
        predict_job(image, PredictRequest(model=bare, diameter=20))


def test_job_refuses_what_it_cannot_do_with_a_diameter(tmp_path, model, rng):
    image = (rng.random((64, 64)) * 4000).astype(np.uint16)
    request = PredictRequest(model=model, diameter=20)
    with pytest.raises(UserInputError, match="probabilities"):
        predict_job(
            image, request, output_path=tmp_path / "a.tif", probabilities_path=tmp_path / "p.tif"
        )
    with pytest.raises(UserInputError, match="pyramid"):
        predict_job(image, request, output_path=tmp_path / "a.zarr", pyramid=True)
    assert not list(tmp_path.glob("a.*")) and not list(tmp_path.glob("p.*"))


def test_cli_diameter(tmp_path, model, rng, capsys):
    image = (rng.random((90, 70)) * 4000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", image)
    out = tmp_path / "out.tif"
    args = ["predict", str(tmp_path / "in.tif"), "--model", str(model), "-o", str(out)]
    assert main([*args, "--diameter", "14", "--device", "cpu"]) == 0
    written = tifffile.imread(out)
    assert written.shape == image.shape and written.dtype == np.int32
    expected = predict(image, model, output="instances", diameter=14, device="cpu")
    np.testing.assert_array_equal(written, expected)
    out.unlink()
    for bad, message in [("abc", "diameter must be"), ("-2", "positive number")]:
        assert main([*args, "--diameter", bad]) == 1
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("napari-tiled-unet: error:") and message in err, err
        assert not out.exists()


@pytest.mark.parametrize(("trained_range", "rescaled"), [((5.0, 40.0), False), ((5.0, 12.0), True)])
def test_auto_keeps_the_scale_of_objects_a_model_was_trained_to_see(
    tmp_path, monkeypatch, trained_range, rescaled
):
    """Issue 17: a model trained with scale augmentation stores the diameters it saw; "auto"
    rescales only images whose objects fall outside them."""
    model = save_model(
        tiny_unet(num_classes=3),
        tmp_path / "ranged.pt",
        label_mode="instance",
        object_diameter=TRAINED,
        object_diameter_range=trained_range,
    )

    def finds_every_object(image, model=None, *, output="labels", **kwargs):
        seen.append(np.asarray(image).shape)
        yield from ()
        return ndi.label(np.asarray(image) > 550)[0].astype(np.int32)

    seen = []
    image, truth = disc_image((120, 100), 20, 30)
    real = inference.iter_predict
    monkeypatch.setattr(inference, "iter_predict", finds_every_object)
    net = inference.resolve_model(model)
    found = inference.run_to_completion(real(image, net, output="instances", diameter="auto"))
    assert object_f1(truth, found) == 1.0
    assert any(shape != image.shape for shape in seen) == rescaled
