"""Issue 17: training's validation object F1 labels objects the way prediction will with the
run's model (the separation settings its file's object sizes give), not the plain rule."""

import numpy as np
import torch
from _train_problems import disc_image, tiny_config

from napari_tiled_unet.separation import InstanceOptions
from napari_tiled_unet.training import Trainer
from napari_tiled_unet.training.validation import ValidationTiles, score_validation


def test_validation_uses_the_separation_of_the_trained_model():
    image, instances = disc_image(size=96, count=8, seed=1)
    trainer = Trainer(
        image, instances, tiny_config(label_mode="instance", iterations=2, validation_every=2)
    )
    model = trainer.run()
    assert trainer._validation is not None
    expected = InstanceOptions.for_model(model.info)
    assert expected.refines and trainer._validation.options == expected


class _Perfect(torch.nn.Module):
    """Returns logits that put every pixel in its true class: only the labelling decides."""

    def __init__(self, targets: np.ndarray) -> None:
        super().__init__()
        self.logits = 10.0 * torch.nn.functional.one_hot(torch.from_numpy(targets), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.movedim(-1, 1).float()


def test_object_f1_follows_the_tiles_separation():
    from napari_tiled_unet.training.targets import make_targets

    _, instances = disc_image(size=64, count=5, seed=2)
    targets, annotated = make_targets(instances, "instance")
    tiles = ValidationTiles(
        np.zeros((1, 1, 64, 64), np.float32),
        targets[None].astype(np.int64),
        annotated[None],
        instances[None],
    )
    model = _Perfect(targets[None].astype(np.int64))

    def object_f1(options):
        tiles.options = options
        scores = score_validation(
            model, tiles, "instance", 3, batch_size=1, device=torch.device("cpu"), amp=False
        )
        return scores["val_object_f1"]

    assert object_f1(None) == 1.0
    assert object_f1(InstanceOptions(min_object_size=instances.size)) == 0.0
