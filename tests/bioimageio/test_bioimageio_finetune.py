"""Fine-tuning from a bioimage.io package of ours through the job layer (what the Train widget's
'start from: model file…' and ``TrainRequest(model=...)`` do). Needs the ``bioimageio`` extra."""

import numpy as np
import pytest

from _nets import tiny_unet

pytest.importorskip("bioimageio.core")

from napari_tiled_unet import Normalization
from napari_tiled_unet.bioimageio import export_bioimageio
from napari_tiled_unet.jobs import TrainImage, TrainRequest, plan_training
from napari_tiled_unet.training import TrainConfig


def test_a_package_is_fine_tuned_with_its_architecture_and_normalisation(tmp_path):
    net = tiny_unet("same", depth=2)
    net.info = net.info.replace(
        normalization=Normalization("percentile", low=2.0, high=99.0), label_mode="semantic"
    )
    package = export_bioimageio(net, tmp_path / "tiny.zip")
    rng = np.random.default_rng(0)
    image = rng.normal(size=(64, 64)).astype(np.float32)
    labels = (image > 0.5).astype(np.uint8)
    config = TrainConfig(
        label_mode="semantic", iterations=2, batch_size=2, device="cpu", prefetch=False
    )
    plan = plan_training(TrainRequest(config, tile=32, model=package), [TrainImage(image, labels)])
    trainer = plan.trainer()
    model = trainer.run()
    assert model.config == net.config
    assert model.info.normalization == net.info.normalization
    assert trainer.step == 2 and model.info.training["fine_tuned_from"] == "UNet object"
