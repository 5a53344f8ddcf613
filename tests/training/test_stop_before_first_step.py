"""A run stopped before its first optimizer step offers no model (issue 15 §1)."""

import numpy as np
from _train_problems import disc_image, tiny_config

from napari_tiled_unet.training import Trainer


def test_stop_at_the_first_event_leaves_no_model():
    image, instances = disc_image(size=64, count=4, seed=1)
    trainer = Trainer(image, instances, tiny_config(iterations=5), names=["cells"])
    run = trainer.iter_run()
    first = next(run)  # data scanned, model built, no step yet
    assert first.done == 0 and trainer.status == "running"
    run.close()
    assert trainer.status == "stopped" and trainer.step == 0
    assert trainer.best_model is None  # nothing trained: nothing to offer or save
    # One step later there is a model.
    trainer = Trainer(image, (instances > 0).astype(np.uint8), tiny_config(iterations=5))
    run = trainer.iter_run()
    next(run), next(run)
    run.close()
    assert trainer.step == 1 and trainer.best_model is not None
