"""The weight average (``TrainConfig.ema_decay``): what it computes and which model a run offers."""

from __future__ import annotations

import itertools

import pytest
import torch
from _train_problems import disc_image, tiny_config

from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.model.modelfile import load_model
from napari_tiled_unet.training import TrainConfig, Trainer
from napari_tiled_unet.training.averaging import EMA_WARMUP, WeightAverage, ema_rate


def _weights(model):
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _recording_steps(monkeypatch):
    """Record the trained (raw) weights after every optimizer step."""
    original, raw = Trainer._train_step, []

    def step(model, *args):
        loss = original(model, *args)
        raw.append(_weights(model))
        return loss

    monkeypatch.setattr(Trainer, "_train_step", staticmethod(step))
    return raw


def _ema(raw, decay):
    average = dict(raw[0])
    for n, weights in enumerate(raw[1:], start=1):
        rate = ema_rate(decay, n)
        average = {k: a + rate * (weights[k] - a) for k, a in average.items()}
    return average


def test_ema_rate_forgets_the_first_steps_quickly_then_settles_at_the_decay():
    assert ema_rate(0.995, 1) == pytest.approx(1 - 2 / (EMA_WARMUP + 1))
    rates = [ema_rate(0.995, n) for n in range(1, 3000)]
    assert all(a >= b for a, b in itertools.pairwise(rates))
    assert rates[-1] == pytest.approx(0.005)


def test_weight_average_of_a_parameter():
    layer = torch.nn.Linear(1, 1, bias=False)
    average = WeightAverage(layer, 0.5)
    expected = None
    for n, value in enumerate([4.0, 0.0, 2.0, 8.0]):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update(layer)
        expected = value if expected is None else expected + ema_rate(0.5, n) * (value - expected)
        assert float(average.model.weight) == pytest.approx(expected)
    assert average.steps == 4
    assert float(layer.weight.detach()) == 8.0  # the trained network is left alone
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(layer, 1.0)


@pytest.mark.parametrize("decay", [-0.1, 1.0, float("nan")])
def test_ema_decay_outside_its_range_is_refused(decay):
    with pytest.raises(UserInputError, match="ema_decay"):
        TrainConfig(ema_decay=decay)


def test_a_run_with_ema_offers_the_average_and_trains_the_same_weights(monkeypatch, tmp_path):
    image, instances = disc_image(size=64, count=4, seed=1)
    semantic = (instances > 0).astype("uint8")
    raw = _recording_steps(monkeypatch)
    plain = Trainer(image, semantic, tiny_config(iterations=6, validation_fraction=0.0))
    plain.run()
    raw_plain, raw[:] = list(raw), []

    checkpoint = tmp_path / "ema.pt"
    config = tiny_config(
        iterations=6, validation_fraction=0.0, ema_decay=0.9, checkpoint_path=str(checkpoint)
    )
    averaged = Trainer(image, semantic, config)
    events = list(averaged.iter_run())
    assert [e.done for e in events] == list(range(7))
    # The average never feeds back into the optimisation.
    for a, b in zip(raw, raw_plain, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)

    expected = _ema(raw, 0.9)
    offered = _weights(averaged.best_model)
    assert all(torch.allclose(offered[k], expected[k], atol=1e-6) for k in expected)
    assert any(not torch.allclose(offered[k], raw[-1][k]) for k in expected)
    saved = _weights(load_model(checkpoint))
    assert all(torch.allclose(saved[k], expected[k], atol=1e-6) for k in expected)
    assert averaged.best_model.info.training["config"]["ema_decay"] == 0.9

    list(averaged.iter_continue(2))  # Continue folds the new steps into the same average
    expected = _ema(raw, 0.9)
    offered = _weights(averaged.best_model)
    assert len(raw) == 8
    assert all(torch.allclose(offered[k], expected[k], atol=1e-6) for k in expected)


def test_validation_scores_and_keeps_the_averaged_weights(monkeypatch):
    image, instances = disc_image(size=64, count=4, seed=1)
    semantic = (instances > 0).astype("uint8")
    raw = _recording_steps(monkeypatch)
    config = tiny_config(iterations=6, validation_every=3, ema_decay=0.9)
    trainer = Trainer(image, semantic, config)
    trainer.run()
    assert trainer.best_step in (3, 6)
    expected = _ema(raw[: trainer.best_step], 0.9)
    kept = _weights(trainer.best_model)
    assert all(torch.allclose(kept[k], expected[k], atol=1e-6) for k in expected)
