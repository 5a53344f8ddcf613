"""The training engine end to end, on second-long CPU problems."""

import json
import threading

import numpy as np
import pytest
import torch
from _train_problems import disc_image, tiny_config

from _helpers import drain
from napari_tiled_unet.events import Progress
from napari_tiled_unet.metrics import pixel_scores
from napari_tiled_unet.model.modelfile import load_model, save_model
from napari_tiled_unet.model.unet import UNet
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.training import TrainConfig, Trainer, iter_train, train


@pytest.fixture(scope="module")
def discs():
    image, instances = disc_image(size=96, count=10)
    return image, instances, (instances > 0).astype(np.uint8)


def predict_classes(model, image):
    """Whole-image arg-max with the model's own normalisation (96 px suits depth 2)."""
    norm = Normalization.from_dict(model.metadata["normalization"]).resolve(image)
    with torch.no_grad():
        logits = model(torch.from_numpy(norm.apply(image))[None, None])
    return logits.argmax(1)[0].numpy()


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_loss_falls_and_validation_iou_is_high(discs):
    image, _, semantic = discs
    events, _ = drain(iter_train(image, semantic, tiny_config(iterations=40), names=["nuclei"]))
    assert all(isinstance(e, Progress) and e.stage == "train" for e in events)
    assert [e.done for e in events] == list(range(41)) and events[-1].total == 40
    losses = [e.metrics["loss"] for e in events[1:]]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    validated = [e for e in events if "val_iou" in e.metrics]
    assert [e.done for e in validated] == [20, 40]
    # All-background scores 0 and all-foreground about 0.15: a broken pipeline stays far below.
    assert validated[-1].metrics["val_iou"] > 0.7
    assert set(validated[-1].metrics) >= {"loss", "val_iou", "val_f1", "val_loss"}


def test_result_and_metadata_follow_the_contract(discs, tmp_path):
    image, _, semantic = discs
    model = train(image, semantic, tiny_config(iterations=20, validation_every=10))
    assert isinstance(model, UNet) and not model.training
    assert next(model.parameters()).device.type == "cpu"
    meta = model.metadata
    assert Normalization.from_dict(meta["normalization"]) == Normalization()  # percentiles
    assert meta["label_mode"] == "semantic" and meta["class_names"] == ["background", "class 1"]
    assert meta["axes"] == "YX" and meta["tile_shape"] == [32, 32]
    training = meta["training"]
    assert training["best_step"] in (10, 20) and training["num_pairs"] == 1
    assert training["validation"] == "held-out tiles"
    # The default label mode "auto" is recorded as the mode it chose.
    assert TrainConfig.from_dict(training["config"]) == tiny_config(
        iterations=20, validation_every=10, label_mode="semantic"
    )
    json.dumps(meta)  # plain data only
    loaded = load_model(save_model(model, tmp_path / "m.pt"))
    assert same_weights(loaded, model) and loaded.metadata["label_mode"] == "semantic"


def test_best_model_is_the_best_validated_step(discs):
    image, _, semantic = discs
    trainer = Trainer(image, semantic, tiny_config(iterations=30, validation_every=10))
    trainer.run()
    scores = [h["val_iou"] for h in trainer.history if "val_iou" in h]
    steps = [h["step"] for h in trainer.history if "val_iou" in h]
    assert trainer.best_step == steps[int(np.argmax(scores))]
    assert trainer.best_scores["val_iou"] == max(scores)


def test_same_seed_same_weights_with_or_without_prefetch(discs):
    image, _, semantic = discs
    a = train(image, semantic, tiny_config(iterations=8, seed=5, prefetch=False))
    b = train(image, semantic, tiny_config(iterations=8, seed=5, prefetch=True))
    c = train(image, semantic, tiny_config(iterations=8, seed=6))
    assert same_weights(a, b)
    assert not same_weights(a, c)


def test_fine_tuning_starts_from_the_saved_model(discs, tmp_path):
    image, _, semantic = discs
    base = train(image, semantic, tiny_config(iterations=30, validation_every=30))
    path = save_model(base, tmp_path / "base.pt")
    tuned = train(image, semantic, tiny_config(iterations=2, learning_rate=1e-4), model=path)
    fresh = train(image, semantic, tiny_config(iterations=2, learning_rate=1e-4))

    def distance(a, b):
        return sum(
            float((a.state_dict()[k] - b.state_dict()[k]).abs().sum()) for k in a.state_dict()
        )

    assert distance(tuned, base) < 0.05 * distance(fresh, base)
    assert tuned.metadata["training"]["fine_tuned_from"] == str(path)
    assert tuned.metadata["normalization"] == base.metadata["normalization"]
    # A UNet object is copied, not changed.
    before = {k: v.clone() for k, v in base.state_dict().items()}
    train(image, semantic, tiny_config(iterations=2), model=base)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_fine_tuning_rejects_incompatible_models(discs, tmp_path):
    image, instances, semantic = discs
    path = save_model(train(image, semantic, tiny_config(iterations=1)), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="label_mode='semantic'"):
        train(image, instances, tiny_config(label_mode="instance", iterations=1), model=path)
    with pytest.raises(ValueError, match="input channel"):
        train(np.stack([image, image]), semantic, tiny_config(iterations=1), model=path)
    with pytest.raises(ValueError, match="normalization"):
        train(image, semantic, tiny_config(normalization=Normalization(mode="none")), model=path)
    three = np.where(semantic > 0, 2, 0).astype(np.uint8)
    three[:5] = 1
    with pytest.raises(ValueError, match="3 classes"):
        train(image, three, tiny_config(iterations=1), model=path)


def test_closing_the_generator_keeps_a_usable_best_model(discs, tmp_path):
    image, _, semantic = discs
    checkpoint = tmp_path / "best.pt"
    config = tiny_config(
        iterations=200, validation_every=10, prefetch=True, checkpoint_path=str(checkpoint)
    )
    trainer = Trainer(image, semantic, config)
    run = trainer.iter_run()
    for event in run:
        if event.done == 25:
            break
    run.close()
    assert trainer.status == "stopped" and trainer.step == 25
    assert not [t for t in threading.enumerate() if t.name.startswith("tile-sampler")]
    best = trainer.best_model
    assert (
        trainer.best_step in (10, 20)
        and best.metadata["training"]["best_step"] == trainer.best_step
    )
    saved = load_model(checkpoint)
    assert same_weights(saved, best)
    assert (predict_classes(best, image) == semantic).mean() > 0.8


def test_a_crash_mid_run_leaves_the_checkpoint_intact(discs, tmp_path, monkeypatch):
    image, _, semantic = discs
    checkpoint = tmp_path / "best.pt"
    original = Trainer._train_step
    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == 15:
            raise RuntimeError("simulated crash")
        return original(*args)

    monkeypatch.setattr(Trainer, "_train_step", staticmethod(failing))
    trainer = Trainer(
        image,
        semantic,
        tiny_config(iterations=30, validation_every=10, checkpoint_path=str(checkpoint)),
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.run()
    assert trainer.status == "failed"
    saved = load_model(checkpoint)
    assert saved.metadata["training"]["best_step"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]  # no temporary left over


def test_sparse_scribbles_train_a_usable_model(discs):
    image, instances, semantic = discs
    scribbles = np.zeros_like(semantic)
    for k in range(1, instances.max() + 1):  # a 5-px stroke through each disc
        ys, xs = np.nonzero(instances == k)
        scribbles[ys[len(ys) // 2], xs[len(ys) // 2] - 2 : xs[len(ys) // 2] + 3] = 2
    scribbles[5, 5:40] = scribbles[90, 10:30] = 1  # a few background strokes
    scribbles[60:90, 50] = scribbles[30:50, 80] = 1
    assert (scribbles > 0).mean() < 0.02
    model = train(image, scribbles, tiny_config(label_mode="sparse", iterations=40))
    assert model.metadata["class_names"] == ["label 1", "label 2"]
    prediction = predict_classes(model, image)  # class 1 = painted label 2 = discs
    iou = pixel_scores(semantic, (prediction == 1).astype(np.uint8), 2)["iou"][1]
    assert iou > 0.4  # labelling everything as discs would score about 0.15


def test_sparse_mode_ignores_unannotated_pixels(discs):
    """In a real sparse batch, the loss and its gradient do not depend on what the
    unannotated (label 0) pixels would be."""
    from napari_tiled_unet.training.loss import make_loss

    image, _, semantic = discs
    scribbles = np.zeros_like(semantic)
    scribbles[40:56, 10:80] = semantic[40:56, 10:80] + 1
    trainer = Trainer(image, scribbles, tiny_config(label_mode="sparse", iterations=1))
    model = trainer.run()
    x, targets, weights = trainer._sampler.batch(np.random.default_rng(0), 4)
    assert (weights > 0).any() and (weights == 0).any()
    scrambled = np.where(weights > 0, targets, 1 - targets)
    for name in ("weighted_ce", "dice"):
        grads = []
        for t in (targets, scrambled):
            model.zero_grad()
            loss = make_loss(name)(
                model(torch.from_numpy(x)), torch.from_numpy(t), torch.from_numpy(weights)
            )
            loss.backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        assert all(torch.allclose(a, b) for a, b in zip(*grads, strict=True))


def test_instance_mode_reports_object_f1(discs):
    image, instances, _ = discs
    trainer = Trainer(
        image, instances, tiny_config(label_mode="instance", iterations=20, validation_every=20)
    )
    model = trainer.run()
    assert model.config.num_classes == 3
    assert model.metadata["class_names"] == ["background", "interior", "boundary"]
    assert 0 <= trainer.best_scores["val_object_f1"] <= 1
    assert trainer.best_scores["val_iou"] > 0.3


def test_valid_padding_and_held_out_images(discs):
    image, _, semantic = discs
    other_image, other_instances = disc_image(size=80, count=6, seed=3)
    config = tiny_config(
        padding="valid", tile_shape=(60, 60), iterations=6, validation_every=3, optimizer="sgd"
    )
    trainer = Trainer(
        [image, image[:50, :70]],
        [semantic, semantic[:50, :70]],
        config,
        validation=[(other_image, (other_instances > 0).astype(np.uint8), "held out")],
    )
    model = trainer.run()
    assert model.config.padding == "valid" and model.geometry.output_offset == 20
    assert trainer.layout.out_shape == (20, 20)
    assert model.metadata["training"]["validation"] == "held-out images"
    assert model.metadata["training"]["num_validation_tiles"] > 0
    assert not any(p.held_out for p in trainer.pairs)  # nothing held out of the training pairs
    assert "val_iou" in trainer.history[-1]


def test_dice_loss_option_trains(discs):
    image, _, semantic = discs
    events = list(
        iter_train(image, semantic, tiny_config(loss="dice", iterations=30, validation_every=30))
    )
    losses = [e.metrics["loss"] for e in events[1:]]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixed_precision_on_cuda(discs):
    image, _, semantic = discs
    model = train(image, semantic, tiny_config(device="cuda", mixed_precision=True, iterations=20))
    assert next(model.parameters()).device.type == "cpu"
    assert model.metadata["training"]["best_scores"]["val_iou"] > 0.3


def test_3d_volumes_and_channels_first_images_train():
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 0.1, (20, 24, 24)).astype(np.float32)
    labels = np.zeros(volume.shape, np.uint8)
    labels[5:12, 6:14, 6:14] = 1
    labels[12:18, 14:20, 10:20] = 2
    volume[labels > 0] += 1
    model = train(
        volume, labels, tiny_config(label_mode="instance", tile_shape=(16, 16, 16), iterations=2)
    )
    assert model.config.ndim == 3 and model.metadata["axes"] == "ZYX"
    image = np.stack([volume[10], -volume[10]])  # (C, Y, X)
    model = train(
        image, (labels[10] > 0).astype(np.uint8), tiny_config(iterations=2, tile_shape=(16, 16))
    )
    assert model.config.in_channels == 2 and model.metadata["axes"] == "CYX"


def test_train_config_imports_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; from napari_tiled_unet.training import TrainConfig; TrainConfig(); "
        "import napari_tiled_unet.postprocess, napari_tiled_unet.metrics; "
        "assert 'torch' not in sys.modules and 'napari' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
