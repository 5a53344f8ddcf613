import os

import numpy as np
import pytest
import tifffile

from _helpers import running_command
from _nets import tiny_unet
from napari_tiled_unet import predict, save_model
from napari_tiled_unet.cli import main


@pytest.fixture
def model_path(tmp_path):
    return save_model(tiny_unet("same", depth=2), tmp_path / "model.pt")


@pytest.fixture
def image_path(tmp_path, rng):
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, (rng.random((130, 150)) * 4000).astype(np.uint16))
    return path


def test_predict_writes_labels_and_probabilities(tmp_path, model_path, image_path, capsys):
    out, probs = tmp_path / "labels.tif", tmp_path / "probs.tif"
    code = main(
        [
            "predict",
            str(image_path),
            "--model",
            str(model_path),
            "--output",
            str(out),
            "--tile",
            "64",
            "--batch",
            "2",
            "--device",
            "cpu",
            "--probabilities",
            str(probs),
        ]
    )
    assert code == 0
    image = tifffile.imread(image_path)
    expected = predict(image, model_path, output="probabilities", tile_shape=(64, 64))
    np.testing.assert_allclose(tifffile.imread(probs), expected, atol=1e-5)  # batch 2 vs 1
    labels = tifffile.imread(out)
    assert labels.dtype == np.uint8 and labels.shape == image.shape
    np.testing.assert_array_equal(labels, predict(image, model_path, tile_shape=(64, 64)))
    assert "100%" in capsys.readouterr().err  # the tqdm bar ran to the end
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "image.tif",
        "labels.tif",
        "model.pt",
        "probs.tif",
    ]


def _fails(argv, capsys, match):
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("napari-tiled-unet: error:")
    assert match in err[-1], err[-1]


def test_missing_input(tmp_path, model_path, capsys):
    _fails(
        [
            "predict",
            str(tmp_path / "nope.tif"),
            "--model",
            str(model_path),
            "-o",
            str(tmp_path / "o.tif"),
        ],
        capsys,
        "input file not found",
    )
    assert not (tmp_path / "o.tif").exists()


def test_non_tiff_input(tmp_path, model_path, capsys):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    _fails(
        ["predict", str(bad), "--model", str(model_path), "-o", str(tmp_path / "o.tif")],
        capsys,
        "not a readable TIFF",
    )


def test_wrong_dimensionality_and_channels(tmp_path, model_path, rng, capsys):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, (rng.random((40, 50, 3)) * 255).astype(np.uint8))
    _fails(
        ["predict", str(rgb), "--model", str(model_path), "-o", str(tmp_path / "o.tif")],
        capsys,
        "RGB",
    )
    two = save_model(tiny_unet("same", depth=2, in_channels=2), tmp_path / "two.pt")
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, rng.random((3, 40, 50)).astype(np.float32))
    _fails(
        ["predict", str(stack), "--model", str(two), "-o", str(tmp_path / "o.tif")],
        capsys,
        "2 channels",
    )
    assert not (tmp_path / "o.tif").exists()


def test_unwritable_output_fails_before_work(tmp_path, model_path, image_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: use a missing folder instead
            target = tmp_path / "missing" / "o.tif"
            _fails(
                ["predict", str(image_path), "--model", str(model_path), "-o", str(target)],
                capsys,
                "does not exist",
            )
        else:
            _fails(
                [
                    "predict",
                    str(image_path),
                    "--model",
                    str(model_path),
                    "-o",
                    str(locked / "o.tif"),
                ],
                capsys,
                "cannot write",
            )
    finally:
        locked.chmod(0o700)
    _fails(
        ["predict", str(image_path), "--model", str(model_path), "-o", str(image_path)],
        capsys,
        "is the input",
    )


def test_failure_mid_run_leaves_no_partial_output(tmp_path, model_path, rng, capsys):
    image = rng.random((200, 200)).astype(np.float32)
    image[190, 190] = np.nan  # found in the last tile, after others were computed
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, image)
    out = tmp_path / "o.tif"
    out.write_bytes(b"previous result")
    _fails(
        ["predict", str(path), "--model", str(model_path), "-o", str(out), "--tile", "64"],
        capsys,
        "NaN",
    )
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "nan.tif", "o.tif"]


def test_non_model_file(tmp_path, image_path, capsys):
    fake = tmp_path / "fake.pt"
    fake.write_text("weights")
    _fails(
        ["predict", str(image_path), "--model", str(fake), "-o", str(tmp_path / "o.tif")],
        capsys,
        "model file",
    )


def test_train_then_predict_instances(tmp_path, capsys):
    from napari_tiled_unet import load_model
    from napari_tiled_unet.model.modelfile import default_model_path

    data = default_model_path().parent
    model = tmp_path / "m.pt"
    code = main(
        [
            "train",
            "--image",
            str(data / "synthetic_nuclei.tif"),
            "--labels",
            str(data / "synthetic_nuclei_labels.tif"),
            "--output",
            str(model),
            "--mode",
            "instance",
            "--iterations",
            "4",
            "--tile",
            "64",
            "--batch",
            "2",
            "--base-channels",
            "4",
            "--depth",
            "2",
            "--validate-every",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert code == 0, capsys.readouterr().err
    net = load_model(model)
    assert net.metadata["label_mode"] == "instance" and net.config.num_classes == 3
    out = tmp_path / "objects.tif"
    assert (
        main(["predict", str(data / "synthetic_nuclei.tif"), "--model", str(model), "-o", str(out)])
        == 0
    )
    assert (
        tifffile.imread(out).dtype == np.int32
    )  # instance ids, chosen from the model's label mode


def test_train_argument_errors(tmp_path, capsys):
    _fails(
        [
            "train",
            "--image",
            "a.tif",
            "--image",
            "b.tif",
            "--labels",
            "a_l.tif",
            "-o",
            str(tmp_path / "m.pt"),
        ],
        capsys,
        "one --labels per --image",
    )
    assert not (tmp_path / "m.pt").exists()


def test_default_model_segments_the_sample(tmp_path):
    """The README's main job: the bundled model on the bundled real image finds the nuclei."""
    from napari_tiled_unet.metrics import object_f1
    from napari_tiled_unet.model.modelfile import default_model_path

    data = default_model_path().parent
    crop = np.s_[100:356, 100:356]
    image = tifffile.imread(data / "nuclei.tif")[crop]
    tifffile.imwrite(tmp_path / "crop.tif", image)
    assert main(["predict", str(tmp_path / "crop.tif"), "-o", str(tmp_path / "labels.tif")]) == 0
    labels = tifffile.imread(tmp_path / "labels.tif")
    truth = tifffile.imread(data / "nuclei_labels.tif")[crop]
    assert object_f1(truth, labels) > 0.75


def _write_images(folder, rng, names):
    folder.mkdir(exist_ok=True)
    for name in names:
        tifffile.imwrite(folder / name, (rng.random((40, 50)) * 4000).astype(np.uint16))


def open_image(folder, name):
    return tifffile.imread(next(folder.glob(f"{name}.tif*")))


def test_folder_run_writes_one_output_each_and_resumes(tmp_path, model_path, rng):
    _write_images(tmp_path / "in", rng, ["a.tif", "b.tiff"])
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "in"), "--model", str(model_path), "-o", str(out)]
    assert main([*argv, "--tile", "64"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.tif", "b_labels.tif"]
    for name in ("a", "b"):
        image = open_image(tmp_path / "in", name)
        expected = predict(image, model_path, tile_shape=(64, 64))
        np.testing.assert_array_equal(tifffile.imread(out / f"{name}_labels.tif"), expected)
    (out / "a_labels.tif").write_bytes(b"done before")  # complete outputs are not redone
    (out / "b_labels.tif").unlink()
    assert main([*argv, "--tile", "64"]) == 0
    assert (out / "a_labels.tif").read_bytes() == b"done before"
    assert tifffile.imread(out / "b_labels.tif").shape == (40, 50)


def test_several_files_to_zarr_and_outputs_beside_inputs_are_not_inputs(tmp_path, model_path, rng):
    import zarr

    _write_images(tmp_path, rng, ["a.tif", "b.tif"])
    argv = ["predict", str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]
    assert main([*argv, "--model", str(model_path), "-o", str(tmp_path), "--format", "zarr"]) == 0
    labels = zarr.open_array(str(tmp_path / "a_labels.zarr"), mode="r")
    expected = predict(tifffile.imread(tmp_path / "a.tif"), model_path)
    np.testing.assert_array_equal(labels[:], expected)
    # a folder run in the same folder skips a, b and does not treat a_labels.tif as an input
    assert main(["predict", str(tmp_path), "--model", str(model_path), "-o", str(tmp_path)]) == 0
    assert not list(tmp_path.glob("*_labels_labels*"))


def test_bad_file_in_a_batch_fails_alone(tmp_path, model_path, rng, capsys):
    _write_images(tmp_path / "in", rng, ["a.tif", "c.tif"])
    good = tmp_path / "in" / "c.tif"
    (tmp_path / "in" / "b.tif").write_bytes(good.read_bytes()[:300])  # truncated
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), "--model", str(model_path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "b.tif" in err and "truncated" in err and "1 of 3 inputs failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.tif", "c_labels.tif"]


def test_zarr_output_for_one_file(tmp_path, model_path, image_path):
    import zarr

    assert (
        main(
            ["predict", str(image_path), "--model", str(model_path), "-o", str(tmp_path / "l.zarr")]
        )
        == 0
    )
    expected = predict(tifffile.imread(image_path), model_path)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "l.zarr"), mode="r")[:], expected)


def test_axes_the_model_cannot_take_are_named(tmp_path, model_path, rng, capsys):
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, rng.random((5, 40, 50)).astype(np.float32), metadata={"axes": "ZYX"})
    planar = tmp_path / "planar.tif"  # three colour planes: tifffile says SYX
    tifffile.imwrite(planar, (rng.random((3, 40, 50)) * 255).astype(np.uint8))
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, rng.random((40, 50)).astype(np.float32))
    two = save_model(tiny_unet("same", depth=2, in_channels=2), tmp_path / "two.pt")
    cases = [
        (planar, model_path, "(TIFF axes SYX: sample/colour, height, width)"),
        (flat, two, "(TIFF axes YX: height, width) has shape (40, 50)"),
    ]
    for image, model, axes in cases:
        before = image.read_bytes()
        _fails(
            ["predict", str(image), "--model", str(model), "-o", str(tmp_path / "o.tif")],
            capsys,
            f"input {image} {axes}",
        )
        assert image.read_bytes() == before
    _fails(
        ["predict", str(planar), "--model", str(model_path), "-o", str(tmp_path / "o.tif")],
        capsys,
        "3 channels, the model takes 1 (select one with channels=[k], --channels k)",
    )
    _fails(
        ["predict", str(flat), "--model", str(two), "-o", str(tmp_path / "o.zarr")],
        capsys,
        "expects a 2D image with 2 channels, axes CYX",
    )
    _fails(
        [*("predict", str(stack), "--model", str(model_path)), "--axes", "CYX", "-o", "o.tif"],
        capsys,
        "has shape (5, 40, 50) and axes CYX, but the model expects a 2D single-channel image",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "flat.tif",
        "model.pt",
        "planar.tif",
        "stack.tif",
        "two.pt",
    ]
    # A Z stack for a 2D model is predicted plane by plane, its axes kept.
    out = tmp_path / "planes.tif"
    assert main(["predict", str(stack), "--model", str(model_path), "-o", str(out)]) == 0
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "ZYX" and tif.series[0].shape == (5, 40, 50)
    image = tifffile.imread(stack)
    np.testing.assert_array_equal(
        tifffile.imread(out), np.stack([predict(plane, model_path) for plane in image])
    )


def test_axes_and_channels_options(tmp_path, model_path, rng, capsys):
    movie = tmp_path / "movie.tif"  # (T, C, Y, X) with unlabelled axes: tifffile says QQYX
    data = rng.random((2, 2, 40, 48)).astype(np.float32)
    tifffile.imwrite(movie, data)
    two = save_model(tiny_unet("same", depth=2, in_channels=2), tmp_path / "two.pt")
    _fails(
        ["predict", str(movie), "--model", str(two), "-o", str(tmp_path / "o.tif")],
        capsys,
        "ambiguous for this model. Readings considered: ZCYX: 2 channel(s), YX planes, one per Z",
    )
    out, probs = tmp_path / "o.tif", tmp_path / "p.tif"
    argv = ["predict", str(movie), "--model", str(two), "-o", str(out), "--axes", "tcyx"]
    assert main([*argv, "--channels", "1,0", "--probabilities", str(probs)]) == 0
    expected = np.stack([predict(frame[[1, 0]], two, output="probabilities") for frame in data], 1)
    np.testing.assert_array_equal(tifffile.imread(probs), expected)
    np.testing.assert_array_equal(tifffile.imread(out), expected.argmax(0))
    with tifffile.TiffFile(out) as tif, tifffile.TiffFile(probs) as ptif:
        assert tif.series[0].axes == "TYX" and ptif.series[0].axes == "CTYX"
    argv = ["predict", str(movie), "--model", str(model_path), "-o", str(tmp_path / "c.tif")]
    assert main([*argv, "--axes", "TCYX", "--channels", "1"]) == 0
    _fails([*argv, "--axes", "TCYX", "--channels", "1,x"], capsys, "--channels: channels must be")
    _fails([*argv, "--axes", "TCYX", "--channels", "4"], capsys, "channels [4] selected")
    _fails([*argv, "--axes", "TXYZC"], capsys, "5 letters for an image of 4 axes")


def test_train_on_multichannel_files(tmp_path, rng, capsys):
    from napari_tiled_unet import load_model

    labels = np.zeros((64, 64), np.uint8)
    labels[10:30, 12:40] = 1
    image = rng.random((64, 64, 3)).astype(np.float32) + labels[..., None]
    rgb, planar, lab = tmp_path / "rgb.tif", tmp_path / "planar.tif", tmp_path / "lab.tif"
    tifffile.imwrite(rgb, (image * 100).astype(np.uint8))  # tifffile says YXS
    tifffile.imwrite(planar, np.moveaxis(image, -1, 0)[:2])  # QYX: the labels say C
    tifffile.imwrite(lab, labels)
    small = ["--iterations", "2", "--tile", "32", "--batch", "2", "--base-channels", "4"]
    small += ["--depth", "2", "--validate-every", "2", "--device", "cpu"]
    for image_path, extra, channels in [
        (rgb, [], 3),
        (planar, [], 2),
        (rgb, ["--axes", "YXC", "--channels", "2,0"], 2),
    ]:
        model = tmp_path / "m.pt"
        argv = ["train", "--image", str(image_path), "--labels", str(lab), "-o", str(model)]
        assert main([*argv, *small, *extra]) == 0, capsys.readouterr().err
        net = load_model(model)
        assert net.config.in_channels == channels
        assert net.metadata["normalization"]["per_channel"] is True
    out = tmp_path / "o.tif"
    assert (
        main(["predict", str(rgb), "--model", str(model), "--channels", "2,0", "-o", str(out)]) == 0
    )
    assert tifffile.imread(out).shape == (64, 64)
    # The model file keeps the selection; predicting without --channels applies it.
    assert load_model(model).metadata["channels"] == [2, 0]
    assert load_model(model).metadata["source_channels"] == 3
    stored = tmp_path / "stored.tif"
    assert main(["predict", str(rgb), "--model", str(model), "-o", str(stored)]) == 0
    np.testing.assert_array_equal(tifffile.imread(stored), tifffile.imread(out))


def test_predict_applies_the_models_stored_channel_selection(tmp_path, rng, capsys):
    net = tiny_unet("same", depth=2, in_channels=2)
    model = save_model(net, tmp_path / "sel.pt", channels=[2, 0], source_channels=3)
    data = rng.random((3, 40, 48)).astype(np.float32)
    three = tmp_path / "three.tif"  # tifffile says QYX
    tifffile.imwrite(three, data)
    out, probs = tmp_path / "o.tif", tmp_path / "p.tif"
    argv = ["predict", str(three), "--model", str(model), "-o", str(out)]
    assert main([*argv, "--probabilities", str(probs)]) == 0, capsys.readouterr().err
    expected = predict(data, model, channels=[2, 0], output="probabilities")
    np.testing.assert_array_equal(tifffile.imread(probs), expected)
    np.testing.assert_array_equal(tifffile.imread(out), expected.argmax(0))
    assert main([*argv, "--channels", "1,0"]) == 0  # an explicit selection wins
    np.testing.assert_array_equal(tifffile.imread(out), predict(data[[1, 0]], net))
    four = tmp_path / "four.tif"
    tifffile.imwrite(four, np.concatenate([data, data[:1]]))
    argv = ["predict", str(four), "--model", str(model), "-o", str(tmp_path / "f.tif")]
    _fails(argv, capsys, "trained on channels [2, 0] of 3-channel images")
    _fails(argv, capsys, "--channels on the command line")


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM")
def test_sigterm_removes_unfinished_output(tmp_path, model_path, rng):
    """A batch scheduler's kill (SIGTERM) cleans up like Ctrl-C: no output, no temporary files."""
    import signal
    import sys

    source = tmp_path / "in"
    source.mkdir()
    image = source / "big.tif"
    tifffile.imwrite(image, rng.random((1500, 1500), dtype=np.float32))
    before = image.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "napari_tiled_unet.cli", "predict", str(image)]
    cmd += ["-o", str(out / "labels.tif"), "--model", str(model_path), "--tile", "64"]
    cmd += ["--device", "cpu"]
    with running_command(cmd) as run:
        assert run.tiles_done() > 0, run.stderr()
        assert run.proc.poll() is None, "the run ended before it could be terminated"
        assert any(out.iterdir())  # the unfinished output exists while tiles are written
        run.proc.send_signal(signal.SIGTERM)
        run.proc.wait(timeout=60)
    proc, stderr = run.proc, run.stderr()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "terminated" in stderr and "Traceback" not in stderr
    assert list(out.iterdir()) == []
    assert image.read_bytes() == before


def test_train_3d_anisotropic_model(tmp_path, capsys):
    import tifffile

    from napari_tiled_unet import load_model

    rng = np.random.default_rng(0)
    labels = np.zeros((12, 48, 48), np.uint8)
    labels[3:9, 10:30, 12:36] = 1
    image = (rng.random(labels.shape) + labels).astype(np.float32)
    tifffile.imwrite(tmp_path / "vol.tif", image)
    tifffile.imwrite(tmp_path / "lab.tif", labels)
    model = tmp_path / "m.pt"
    argv = ["train", "--image", str(tmp_path / "vol.tif"), "--labels", str(tmp_path / "lab.tif")]
    argv += ["-o", str(model), "--iterations", "2", "--tile", "32", "--batch", "1"]
    argv += ["--base-channels", "4", "--depth", "2", "--validate-every", "2", "--device", "cpu"]
    assert main([*argv, "--ndim", "3", "--anisotropic-levels", "1"]) == 0, capsys.readouterr().err
    net = load_model(model)
    assert net.config.ndim == 3 and net.config.anisotropic_levels == 1
    assert net.metadata["tile_shape"] == [12, 32, 32]  # Z: as deep as the volume
    assert main([*argv, "--anisotropic-levels", "1"]) == 1
    assert "--ndim 3" in capsys.readouterr().err
    assert main([*argv, "--ndim", "3", "--depth", "4"]) == 1
    assert "16-plane steps" in capsys.readouterr().err


def test_only_the_engines_warnings_become_one_line(capsys):
    import functools
    import warnings

    from napari_tiled_unet import cli

    others = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = functools.partial(
            cli._show_warning, others=lambda *args: others.append(args[1])
        )
        warnings.warn("tiles read 5x the image", stacklevel=1)
        warnings.warn("unclosed file <_io.FileIO>", ResourceWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == "napari-tiled-unet: warning: tiles read 5x the image\n"
    assert others == [ResourceWarning]  # the collector's warning, shown as before, not as ours
