"""``napari-tiled-unet train``: the default label mode "auto", and defaults shown in --help."""

import numpy as np
import pytest
import tifffile

from napari_tiled_unet import load_model
from napari_tiled_unet.cli import build_parser, main
from napari_tiled_unet.model.modelfile import default_model_path
from napari_tiled_unet.training import TrainConfig

SAMPLE = default_model_path().parent
TINY = ["--iterations", "2", "--tile", "64", "--batch", "2", "--base-channels", "4"]
TINY += ["--depth", "2", "--validate-every", "2", "--device", "cpu"]


def test_help_shows_the_training_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    defaults = TrainConfig()
    for option, value in (
        ("--mode", defaults.label_mode),
        ("--iterations", defaults.iterations),
        ("--batch", defaults.batch_size),
        ("--lr", defaults.learning_rate),
        ("--optimizer", defaults.optimizer),
        ("--seed", defaults.seed),
        ("--base-channels", defaults.network.base_channels),
        ("--depth", defaults.network.depth),
        ("--padding", defaults.network.padding),
        ("--validate-every", defaults.validation_every),
        ("--w0", defaults.w0),
        ("--ema-decay", defaults.ema_decay),
    ):
        start = text.index(f" {option} ")
        following = text[start : start + 400]
        assert f"(default: {value})" in following, (option, following)
    assert "(default 256;" in text and "default 0)" in text  # --tile, --anisotropic-levels
    # The parser's defaults are TrainConfig's, not copies of them.
    args = build_parser().parse_args(["train", "--image", "a", "--labels", "b", "-o", "m.pt"])
    assert (args.mode, args.iterations, args.batch, args.lr) == (
        defaults.label_mode,
        defaults.iterations,
        defaults.batch_size,
        defaults.learning_rate,
    )


def _train(tmp_path, labels, *extra):
    model = tmp_path / "m.pt"
    image = SAMPLE / "synthetic_nuclei.tif"
    args = ["train", "--image", str(image), "--labels", str(labels), "-o", str(model)]
    return main([*args, *TINY, *extra]), model


def test_instance_masks_train_an_instance_model_by_default(tmp_path, capsys):
    """Issue 15: the sample's instance masks made a 41-class semantic model by default."""
    code, model = _train(tmp_path, SAMPLE / "synthetic_nuclei_labels.tif")
    err = capsys.readouterr().err
    assert code == 0, err
    line = "label mode instance (auto: 40 ids, each one connected blob)"
    assert f"napari-tiled-unet: {line}" in err.splitlines()
    net = load_model(model)
    assert net.metadata["label_mode"] == "instance" and net.config.num_classes == 3


def test_a_mask_trains_semantic_and_many_classes_stop_before_training(tmp_path, capsys):
    labels = tifffile.imread(SAMPLE / "synthetic_nuclei_labels.tif")
    mask = tmp_path / "mask.tif"
    tifffile.imwrite(mask, (labels > 0).astype(np.uint8))
    code, model = _train(tmp_path, mask)
    assert code == 0 and load_model(model).metadata["label_mode"] == "semantic"
    assert "label mode semantic (auto: 1 value (a foreground mask)" in capsys.readouterr().err
    model.unlink()

    wide = tmp_path / "wide.tif"
    tifffile.imwrite(wide, (labels > 0).astype(np.uint8) * 255)
    code, model = _train(tmp_path, wide)
    err = capsys.readouterr().err
    assert code == 1 and "256-class model" in err and "--mode instance" in err
    assert len(err.strip().splitlines()) == 1 and not model.exists()


def test_explicit_semantic_on_instance_masks_warns(tmp_path, capsys):
    code, _model = _train(tmp_path, SAMPLE / "synthetic_nuclei_labels.tif", "--mode", "semantic")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "napari-tiled-unet: label mode semantic (as asked)" in err
    warning = [line for line in err.splitlines() if "warning:" in line]
    assert len(warning) == 1 and "41-class model" in warning[0] and "instance mode" in warning[0]


def test_appearance_and_scale_augmentation_from_the_command_line(tmp_path, capsys):
    """Issue 17: the augmentation, border weight and weight average of the recipe are open to
    users' training."""
    labels = SAMPLE / "synthetic_nuclei_labels.tif"
    recipe = ("--augment-appearance", "--augment-scale", "2", "--augment-dimming", "4")
    recipe += ("--w0", "30", "--ema-decay", "0.9")
    code, model = _train(tmp_path, labels, *recipe)
    assert code == 0, capsys.readouterr().err
    config = load_model(model).info.training["config"]
    assert config["augment"]["appearance"] is True and config["augment"]["scale"] == 2.0
    assert config["augment"]["dimming"] == 4.0
    assert config["w0"] == 30.0 and config["ema_decay"] == 0.9
    model.unlink()

    code, model = _train(tmp_path, labels)
    config = load_model(model).info.training["config"]
    assert code == 0 and config["augment"]["appearance"] is False
    assert config["augment"]["scale"] == 1.0 and config["w0"] == TrainConfig().w0
    assert config["augment"]["dimming"] == 1.0
    model.unlink()

    for option in ("--w0", "--ema-decay"):
        code, model = _train(tmp_path, labels, option, "-1")
        err = capsys.readouterr().err
        assert code != 0 and option.strip("-").replace("-", "_") in err and not model.exists()

    for option, name in (("--augment-scale", "scale"), ("--augment-dimming", "dimming")):
        code, model = _train(tmp_path, labels, option, "0.5")
        err = capsys.readouterr().err
        assert code != 0 and name in err and not model.exists()
