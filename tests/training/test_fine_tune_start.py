"""Starting a run from a model: the lower fine-tuning learning rate, in the API, the job layer and
the command line (issue 13)."""

import numpy as np
import pytest
import tifffile
from _train_problems import disc_image, tiny_config

from napari_tiled_unet.cli import main
from napari_tiled_unet.jobs import TrainImage, TrainRequest, plan_training
from napari_tiled_unet.model.modelfile import load_model, save_model
from napari_tiled_unet.training import Trainer, train
from napari_tiled_unet.training.config import FINETUNE_LR, LEARNING_RATE, TrainConfig

#: What the fine-tuning default is called in messages.
DEFAULT_REASON = ("lower " if FINETUNE_LR < LEARNING_RATE else "") + "default for fine-tuning"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny instance model trained for one step, and its file."""
    image, instances = disc_image(size=64, count=6)
    model = train(image, instances, tiny_config(iterations=1, label_mode="instance"))
    path = save_model(model, tmp_path_factory.mktemp("base") / "base.pt")
    return image, instances, model, path


def test_config_rate_rule():
    assert TrainConfig().run_learning_rate(False) == (LEARNING_RATE, "as set")
    assert TrainConfig().run_learning_rate(True) == (FINETUNE_LR, DEFAULT_REASON)
    assert TrainConfig(learning_rate=5e-3).run_learning_rate(True)[0] == 5e-3
    explicit = TrainConfig(fine_tune_learning_rate=LEARNING_RATE)
    assert explicit.run_learning_rate(True)[0] == LEARNING_RATE
    assert explicit.run_learning_rate(False)[0] == LEARNING_RATE
    with pytest.raises(ValueError, match="fine_tune_learning_rate must be in"):
        TrainConfig(fine_tune_learning_rate=0.0)


@pytest.mark.parametrize("start", ["file", "object"])
def test_the_api_fine_tunes_at_the_lower_default_and_says_so(base, start):
    image, instances, model, path = base
    config = tiny_config(iterations=1, label_mode="instance", learning_rate=LEARNING_RATE)
    trainer = Trainer(image, instances, config, model=path if start == "file" else model)
    assert trainer.config.learning_rate == FINETUNE_LR
    assert trainer.fine_tuning == f"fine-tuning: learning rate {FINETUNE_LR:g} ({DEFAULT_REASON})"
    tuned = trainer.run()
    assert tuned.info.training["config"]["learning_rate"] == FINETUNE_LR
    assert tuned.info.training["fine_tuned_from"] == (
        str(path) if start == "file" else "UNet object"
    )
    # A new network keeps its rate and says nothing.
    fresh = Trainer(image, instances, config)
    assert fresh.config.learning_rate == LEARNING_RATE and fresh.fine_tuning == ""
    # A rate the user chose is kept.
    chosen = Trainer(
        image, instances, tiny_config(label_mode="instance", learning_rate=3e-3), model=path
    )
    assert chosen.config.learning_rate == 3e-3 and "as set" in chosen.fine_tuning


@pytest.mark.parametrize("start", ["file", "object"])
def test_the_job_layer_starts_from_a_model_file_or_object(base, start):
    image, instances, model, path = base
    request = TrainRequest(
        TrainConfig(iterations=1, batch_size=2, device="cpu", validation_fraction=0),
        tile=32,
        model=path if start == "file" else model,
    )
    plan = plan_training(request, [TrainImage(image, instances, "discs")])
    assert plan.config.label_mode == "instance"  # auto: the model's own
    trainer = plan.trainer()
    tuned = trainer.run()
    assert trainer.config.learning_rate == FINETUNE_LR
    # The architecture is the model's, not the request's default network.
    assert tuned.config == model.config
    assert tuned.info.normalization == model.info.normalization


def test_the_command_line_lowers_the_rate_for_resume_unless_given(base, tmp_path, capsys):
    image, instances, _model, path = base
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", instances.astype(np.uint16))
    args = [
        "train",
        "--image",
        str(tmp_path / "image.tif"),
        "--labels",
        str(tmp_path / "labels.tif"),
    ]
    args += ["--iterations", "1", "--tile", "32", "--batch", "2", "--device", "cpu"]
    args += ["--resume", str(path)]

    assert main([*args, "-o", str(tmp_path / "default.pt")]) == 0
    err = capsys.readouterr().err
    assert (
        f"napari-tiled-unet: fine-tuning: learning rate {FINETUNE_LR:g} ({DEFAULT_REASON})" in err
    )
    assert (
        load_model(tmp_path / "default.pt").info.training["config"]["learning_rate"] == FINETUNE_LR
    )

    assert main([*args, "--lr", "0.002", "-o", str(tmp_path / "given.pt")]) == 0
    assert "napari-tiled-unet: fine-tuning: learning rate 0.002 (as set)" in capsys.readouterr().err
    assert load_model(tmp_path / "given.pt").info.training["config"]["learning_rate"] == 2e-3


def test_the_command_line_fine_tunes_an_instance_model_on_partial_instances(base, tmp_path, capsys):
    image, instances, _model, path = base
    partial = np.zeros(instances.shape, np.uint16)
    partial[instances == 1] = 2  # two whole objects and background strokes
    partial[instances == 2] = 3
    stroke = np.zeros(instances.shape, bool)
    stroke[::8] = True
    partial[stroke & (instances == 0)] = 1
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "partial.tif", partial)
    args = [
        "train",
        "--image",
        str(tmp_path / "image.tif"),
        "--labels",
        str(tmp_path / "partial.tif"),
    ]
    args += ["--iterations", "1", "--tile", "32", "--batch", "2", "--device", "cpu"]
    args += ["--resume", str(path), "--mode", "sparse-instance", "-o", str(tmp_path / "m.pt")]
    assert main(args) == 0, capsys.readouterr().err
    assert "label mode sparse-instance (as asked)" in capsys.readouterr().err
    tuned = load_model(tmp_path / "m.pt")
    assert tuned.info.label_mode == "instance" and tuned.config.num_classes == 3
    assert tuned.info.training["config"]["label_mode"] == "sparse-instance"
