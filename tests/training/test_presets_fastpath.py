"""Training presets, batch prefetching and the step's fast path (channels-last, CPU fallback of
mixed precision)."""

import dataclasses
import threading

import numpy as np
import pytest
import torch
from _train_problems import disc_image, tiny_config

from _nets import tiny_unet
from napari_tiled_unet.config import NetworkSpec
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.training import TrainConfig, Trainer
from napari_tiled_unet.training import prefetch as prefetch_module
from napari_tiled_unet.training.loss import weighted_cross_entropy
from napari_tiled_unet.training.optim import train_step
from napari_tiled_unet.training.prefetch import BatchSource, prefetch_ahead
from napari_tiled_unet.training.presets import PRESET_NAMES, PRESETS
from napari_tiled_unet.training.step import StepPlan

# ---------------------------------------------------------------------------------------------
# Presets


def test_interactive_preset_is_the_documented_configuration():
    config = TrainConfig.preset("interactive")
    assert config.network == NetworkSpec(base_channels=16, depth=3)
    assert config.tile_shape == (192, 192)
    assert config.batch_size == 4
    # Everything else keeps the defaults (learning rate, loss, augmentation, validation).
    unset = {f.name for f in dataclasses.fields(TrainConfig)} - set(PRESETS["interactive"])
    default = TrainConfig()
    assert all(getattr(config, name) == getattr(default, name) for name in unset)


def test_default_preset_is_the_default_config_and_overrides_win():
    assert TrainConfig.preset("default") == TrainConfig()
    config = TrainConfig.preset("interactive", iterations=7, batch_size=2)
    assert (config.iterations, config.batch_size, config.tile_shape) == (7, 2, (192, 192))
    assert PRESET_NAMES[0] == "default" and "interactive" in PRESET_NAMES


def test_unknown_preset_names_the_presets():
    with pytest.raises(UserInputError, match="interactive"):
        TrainConfig.preset("fastest")


def test_presets_round_trip_through_dicts():
    for name in PRESET_NAMES:
        config = TrainConfig.preset(name)
        assert TrainConfig.from_dict(config.to_dict()) == config


# ---------------------------------------------------------------------------------------------
# Prefetching


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_prefetch_accepts_auto_true_false_only(value):
    with pytest.raises(UserInputError, match="prefetch"):
        TrainConfig(prefetch=value)


def test_auto_prefetch_needs_a_free_core_on_cpu(monkeypatch):
    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    monkeypatch.setattr(prefetch_module, "available_cores", lambda: threads)
    assert not prefetch_ahead("auto", cpu)
    monkeypatch.setattr(prefetch_module, "available_cores", lambda: threads + 1)
    assert prefetch_ahead("auto", cpu)
    assert prefetch_ahead("auto", torch.device("cuda"))  # an accelerator: the CPU is free
    assert prefetch_ahead(True, cpu) and not prefetch_ahead(False, torch.device("cuda"))


def _counter():
    count = iter(range(100))
    return lambda: next(count)


@pytest.mark.parametrize("ahead", [False, True])
def test_batch_source_gives_the_batches_in_order_up_to_its_limit(ahead):
    with BatchSource(_counter(), ahead=ahead, limit=5) as source:
        assert source.ahead == ahead
        assert [source.next() for _ in range(5)] == [0, 1, 2, 3, 4]
        with pytest.raises(StopIteration):
            source.next()


def test_batch_source_prepares_no_batch_past_its_limit_and_leaves_no_thread():
    calls = []
    source = BatchSource(lambda: calls.append(1) or len(calls), ahead=True, limit=2)
    assert [source.next(), source.next()] == [1, 2]
    source.close()
    assert len(calls) == 2
    assert not [t for t in threading.enumerate() if t.name.startswith("tile-sampler")]


# ---------------------------------------------------------------------------------------------
# The step's fast path


def _batch(seed=0, size=32, batch=2, classes=3):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((batch, 1, size, size), dtype=np.float32),
        rng.integers(0, classes, (batch, size, size)),
        rng.random((batch, size, size), dtype=np.float32) + 0.5,
    )


def test_cpu_plan_switches_mixed_precision_off_and_keeps_arrays():
    config = TrainConfig(mixed_precision=True, tile_shape=(32, 32))
    plan = StepPlan.for_run(config, torch.device("cpu"))
    assert not plan.amp and not plan.pin_memory and plan.channels_last
    batch = _batch()
    assert all(a is b for a, b in zip(plan.host_batch(batch), batch, strict=True))
    assert (
        StepPlan.for_run(TrainConfig(tile_shape=(16, 32, 32)), torch.device("cpu")).channels_last
        is False
    )
    cuda = StepPlan.for_run(config, torch.device("cuda"))
    assert cuda.amp and cuda.pin_memory
    assert not StepPlan.for_run(
        dataclasses.replace(config, mixed_precision=False), torch.device("cuda")
    ).amp


def test_cpu_step_runs_with_autocast_requested_and_disabled():
    """The mixed-precision path's CPU fallback: ``amp`` from the plan is False, and even a step
    asked for autocast on CPU with no scaler gives a finite float32 loss and moves the weights."""
    plan = StepPlan.for_run(TrainConfig(tile_shape=(32, 32)), torch.device("cpu"))
    net = plan.prepare_model(tiny_unet(depth=2)).train()
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.Adam(net.parameters(), 1e-2)
    loss = train_step(
        net, optimizer, None, weighted_cross_entropy, plan.device, plan.amp, *_batch()
    )
    assert np.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_channels_last_gives_the_loss_and_gradients_of_contiguous():
    reference = tiny_unet(depth=2).train()
    fast = tiny_unet(depth=2).train()
    fast.load_state_dict(reference.state_dict())
    plan = StepPlan.for_run(TrainConfig(tile_shape=(32, 32)), torch.device("cpu"))
    fast = plan.prepare_model(fast)
    conv = next(p for p in fast.parameters() if p.ndim == 4 and p.shape[1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x, t, w = (torch.from_numpy(a) for a in _batch(seed=3))
    losses = []
    for net in (reference, fast):
        loss = weighted_cross_entropy(net(x), t, w)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for a, b in zip(reference.parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_a_channels_last_run_returns_a_plain_contiguous_model():
    image, instances = disc_image(size=96, count=10)
    trainer = Trainer(image, (instances > 0).astype(np.uint8), tiny_config(iterations=3))
    trainer.run()
    model = trainer.best_model
    assert all(p.is_contiguous() for p in model.parameters())
