"""Continue after Stop (same optimizer state, step counter goes on), labels painted while a run
trains, and weight snapshots for a preview thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from _train_problems import disc_image, tiny_config

from napari_tiled_unet.training import Trainer


def sparse_pair(size=64):
    """A disc image with sparse scribbles: 1 = background strokes, 2 = inside two discs."""
    image, instances = disc_image(size=size, count=4, seed=1)
    labels = np.zeros(instances.shape, np.uint8)
    labels[2:4, :] = 1
    labels[instances == 1] = 2
    return image, labels, instances


def adam_steps(trainer):
    optimizer = trainer._state.optimizer
    return {int(s["step"]) for s in optimizer.state.values()}


def test_continue_resumes_steps_and_optimizer_state():
    image, labels, _ = sparse_pair()
    trainer = Trainer(image, labels, tiny_config(label_mode="sparse", iterations=100_000))
    run = trainer.iter_run()
    for event in run:
        if event.done == 5:
            break
    run.close()
    assert trainer.status == "stopped" and trainer.step == 5
    assert adam_steps(trainer) == {5}
    moments = {
        k: v["exp_avg"].clone() for k, v in enumerate(trainer._state.optimizer.state.values())
    }

    events = list(trainer.iter_continue(3))
    assert [e.done for e in events] == [5, 6, 7, 8]
    assert {e.total for e in events} == {8}
    assert "continuing from step 5" in events[0].message
    assert trainer.status == "finished" and trainer.step == 8
    assert adam_steps(trainer) == {8}  # the same Adam state, stepped three more times
    after = list(trainer._state.optimizer.state.values())
    assert any(not np.allclose(after[k]["exp_avg"], m) for k, m in moments.items())
    assert [h["step"] for h in trainer.history] == list(range(1, 9))
    assert trainer.best_model is not None

    with pytest.raises(RuntimeError, match="already run"):
        trainer.run()


def test_continue_needs_a_run_that_stopped():
    image, labels, _ = sparse_pair()
    trainer = Trainer(image, labels, tiny_config(label_mode="sparse", iterations=2))
    with pytest.raises(RuntimeError, match="stopped or finished"):
        next(trainer.iter_continue(2))


def test_labels_painted_while_training_reach_the_sampler():
    image, labels, instances = sparse_pair()
    config = tiny_config(label_mode="sparse", iterations=100_000, validation_fraction=0.0)
    trainer = Trainer(image, labels, config)
    run = trainer.iter_run()
    next(run)
    next(run)  # one step done: the sampler exists
    sampler = trainer._sampler
    before = sampler.pairs[0].block_counts[:, 2].sum()

    # Paint a third disc as object and a new stroke of background, as a Labels layer would.
    labels[instances == 3] = 2
    ys, xs = np.nonzero(instances == 3)
    box = (ys.min(), xs.min()), (ys.max() + 1, xs.max() + 1)
    assert trainer.labels_changed(labels, *box) == 1
    assert trainer.labels_changed(np.zeros_like(labels), *box) == 0  # not a training array
    next(run)
    next(run)
    run.close()
    assert sampler.boxes_taken == 1
    assert sampler.pairs[0].block_counts[:, 2].sum() == before + (instances == 3).sum()
    assert sampler.recent and sampler.recent[-1][0] == 0

    # Recently painted pixels are preferred: most of the next samples land on them.
    rng = np.random.default_rng(0)
    sampler.recent_left = 100
    origins = [sampler.sample_origin(rng)[1] for _ in range(40)]
    out = sampler.layout.out_shape
    on_new = sum(
        o[0] <= y < o[0] + out[0] and o[1] <= x < o[1] + out[1]
        for o in origins
        for y, x in [(ys.mean(), xs.mean())]
    )
    assert on_new >= 10


def test_a_label_value_the_network_lacks_is_not_trained_on():
    image, labels, instances = sparse_pair()
    trainer = Trainer(image, labels, tiny_config(label_mode="sparse", iterations=100_000))
    run = trainer.iter_run()
    next(run)
    labels[instances == 2] = 5  # class 4: the 2-class network has no output for it
    trainer.labels_changed(labels, (0, 0), labels.shape)
    for _ in range(4):
        event = next(run)
    run.close()
    assert np.isfinite(event.metrics["loss"])
    assert trainer._sampler.pairs[0].block_counts.shape[1] == 6


def test_snapshots_are_taken_between_steps():
    image, labels, _ = sparse_pair()
    trainer = Trainer(image, labels, tiny_config(label_mode="sparse", iterations=100_000))
    assert trainer.snapshots.take() is None  # no model yet
    run = trainer.iter_run()
    next(run)
    got = []
    taker = threading.Thread(target=lambda: got.append(trainer.snapshots.take(timeout=30)))
    taker.start()
    while taker.is_alive():
        next(run)  # the training thread serves the copy after its next step
    taker.join()
    run.close()
    state = got[0]
    assert state is not None
    model_state = trainer._state.model.state_dict()
    assert set(state) == set(model_state)
    assert all(v.device.type == "cpu" for v in state.values())
    # Stopped: a copy comes at once, equal to the weights.
    now = trainer.snapshots.take(timeout=0.1)
    assert all(np.array_equal(now[k], model_state[k]) for k in now)
