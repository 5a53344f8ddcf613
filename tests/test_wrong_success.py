"""Inputs that used to give a wrong result or a misleading error (issue 16, section 4)."""

import numpy as np
import pytest
import tifffile
import torch

from _helpers import drain
from _nets import tiny_unet
from napari_tiled_unet import predict, save_model
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.forward import labels_dtype
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.postprocess import labels_from_probabilities
from napari_tiled_unet.training.config import TrainConfig


@pytest.mark.parametrize(
    ("num_classes", "dtype"),
    [(2, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32)],
)
def test_labels_dtype_holds_every_class_id(num_classes, dtype):
    assert labels_dtype(num_classes) == dtype
    assert np.iinfo(labels_dtype(num_classes)).max >= num_classes - 1


def test_class_ids_above_65535_are_not_wrapped(tmp_path):
    """A 70,000-class network whose bias makes class 69,999 win everywhere: stored as uint16
    it came back as 4,463 (69,999 mod 65,536)."""
    from napari_tiled_unet.cli import main
    from napari_tiled_unet.inference import iter_predict_to_file

    net = tiny_unet(num_classes=70000, base_channels=1, depth=1)
    with torch.no_grad():
        net.out.weight.zero_()
        net.out.bias.zero_()
        net.out.bias[69999] = 1.0
    image = np.random.default_rng(0).random((24, 40)).astype(np.float32)

    labels = predict(image, net, tile_shape=(24, 24))
    assert labels.dtype == np.uint32
    assert (labels == 69999).all()
    stored = drain(iter_predict_to_file(image, tmp_path / "l.tif", net, tile_shape=(24, 24)))[1]
    assert stored.dtype == np.uint32 and (np.asarray(stored) == 69999).all()

    model = save_model(net, tmp_path / "many.pt")
    tifffile.imwrite(tmp_path / "image.tif", image)
    argv = ["predict", str(tmp_path / "image.tif"), "--model", str(model), "--device", "cpu"]
    assert main([*argv, "--output", str(tmp_path / "cli.tif")]) == 0
    assert (tifffile.imread(tmp_path / "cli.tif") == 69999).all()

    probabilities = np.zeros((70000, 2, 3), np.float32)
    probabilities[69999] = 1
    found = labels_from_probabilities(probabilities, "semantic")
    assert found.dtype == np.uint32 and (found == 69999).all()


def test_finite_pixels_near_the_float32_limit_are_normalised():
    """±3e38 are finite float32 pixels; only the float32 arithmetic of the normalisation
    overflowed, which was reported as "contains NaN or infinite values"."""
    image = np.ones((32, 32), np.float32)
    image[:12] = 3e38
    image[20:, :10] = -3e38
    net = tiny_unet()
    net.info = net.info.replace(normalization=Normalization("percentile", low=1.0, high=99.8))
    result = predict(image, net, output="probabilities")

    wide = image.astype(np.float64)
    lo, hi = np.percentile(wide, [1.0, 99.8])
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(hi) - np.float32(lo))  # the float32 scale overflows
    normalised = ((wide - lo) / (hi - lo)).astype(np.float32)
    bare = tiny_unet()
    bare.load_state_dict(net.state_dict())  # no stored normalisation: fed as given
    expected = predict(normalised, bare, output="probabilities")
    np.testing.assert_array_equal(result, expected)


def test_not_finite_and_unrepresentable_pixels_have_their_own_messages():
    net = tiny_unet()
    image = np.ones((32, 32), np.float32)
    image[5, 7] = np.nan
    with pytest.raises(UserInputError, match="contains NaN or infinite values"):
        predict(image, net)
    huge = np.ones((32, 32), np.float64)
    huge[5, 7] = 1e300  # finite, but no float32 holds it
    with pytest.raises(UserInputError, match=r"too large .* up to 1e\+300.*rescale"):
        predict(huge, net)


@pytest.mark.parametrize("lr", [1e30, float("inf"), float("nan"), 0.0, -1e-3, "0.001", True])
def test_learning_rate_must_be_a_sane_finite_number(lr):
    with pytest.raises(UserInputError, match=r"TrainConfig\.learning_rate must be"):
        TrainConfig(learning_rate=lr)


def test_float_settings_are_finite_plain_floats():
    for name in ("momentum", "weight_decay", "w0", "sigma", "validation_fraction"):
        with pytest.raises(UserInputError, match=rf"TrainConfig\.{name} must be a finite"):
            TrainConfig(**{name: float("inf")})
    with pytest.raises(UserInputError, match="elastic_sigma must be a finite"):
        TrainConfig(augment={"elastic_sigma": float("nan")})
    config = TrainConfig(learning_rate=np.float32(0.5), w0=np.int64(3))
    assert type(config.learning_rate) is float and type(config.w0) is float  # model-file safe


def test_cli_refuses_an_infinite_learning_rate_in_one_line(tmp_path, capsys):
    from napari_tiled_unet.cli import main

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.uint16))
    tifffile.imwrite(tmp_path / "a_lab.tif", np.zeros((32, 32), np.uint8))
    argv = ["train", "--image", str(tmp_path / "a.tif"), "--labels", str(tmp_path / "a_lab.tif")]
    argv += ["-o", str(tmp_path / "m.pt"), "--lr", "inf", "--device", "cpu"]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "napari-tiled-unet: error: TrainConfig.learning_rate must be a finite number, got inf"
    ]
    assert not (tmp_path / "m.pt").exists()


def _engine(name, tmp_path):
    """A public prediction entry point, as ``run(image, net, **options)``."""
    from napari_tiled_unet import inference

    if name == "predict":
        return predict
    if name == "iter_predict_to_file":
        out = tmp_path / "out.zarr"
        return lambda image, net, **o: drain(inference.iter_predict_to_file(image, out, net, **o))
    if name == "iter_predict":
        return lambda image, net, **o: drain(inference.iter_predict(image, net, **o))
    pytest.importorskip("dask")
    from napari_tiled_unet import distributed

    if name == "predict_dask":
        return distributed.predict_dask
    return lambda image, net, **o: drain(distributed.iter_predict_dask(image, net, **o))


WRONG = [
    (dict(image=None), r"image must be an array with shape and dtype .* got NoneType"),
    (dict(image=[[1.0, 2.0], [3.0, 4.0]]), r"got list; convert it with numpy\.asarray"),
    (dict(image="a.tif"), r"image is a path \('a.tif'\); pass the pixels as an array.*open_tiff"),
    (
        dict(tile_shape=64),
        r"tile_shape must be 2 positive integers.*e\.g\. tile_shape=\(256, 256\); got 64",
    ),
    (dict(tile_shape="64"), r"tile_shape must be 2 positive integers.* got '64'"),
    (dict(tile_shape=(64.5, 64)), r"tile_shape must be 2 positive integers"),
    (dict(tile_shape=(64, 64, 64)), r"tile_shape must be 2 positive integers"),
    (dict(batch_size=1.5), r"batch_size must be a positive integer .* got 1\.5"),
    (dict(batch_size="2"), r"batch_size must be a positive integer .* got '2'"),
    (dict(batch_size=0), r"batch_size must be a positive integer"),
]


@pytest.mark.parametrize(("options", "message"), WRONG, ids=[str(o) for o, _ in WRONG])
@pytest.mark.parametrize(
    "engine",
    ["predict", "iter_predict", "iter_predict_to_file", "predict_dask", "iter_predict_dask"],
)
def test_wrong_argument_types_say_what_to_pass(tmp_path, engine, options, message):
    run = _engine(engine, tmp_path)
    options = dict(options)
    image = options.pop("image", np.zeros((32, 32), np.float32))
    with pytest.raises(UserInputError, match=message):
        run(image, tiny_unet(), device="cpu", **options)
    assert not (tmp_path / "out.zarr").exists()


def test_integer_like_arguments_still_work():
    net = tiny_unet()
    image = np.zeros((80, 80), np.float32)
    expected = predict(image, net, tile_shape=(64, 64), batch_size=2)
    for tile in ([64, 64], np.array([64, 64]), (np.int64(64), 64)):
        np.testing.assert_array_equal(
            predict(image, net, tile_shape=tile, batch_size=np.int64(2)), expected
        )
