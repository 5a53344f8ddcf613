"""What a training run keeps between *Train* and *Continue*, and weight snapshots for a preview.

:class:`RunState` holds the device, the optimizer (with its moments and step counts), the
gradient scaler and the loss of a :class:`~napari_tiled_unet.training.Trainer`, so that
``Trainer.iter_continue`` resumes exactly where a Stop or the end left off.
:class:`WeightSnapshots` hands a copy of the weights, taken by the training thread between two
optimizer steps, to another thread (a live preview) without ever reading half-updated weights.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from napari_tiled_unet.device import resolve_device
from napari_tiled_unet.errors import TrainingDiverged
from napari_tiled_unet.model.unet import UNet
from napari_tiled_unet.training.averaging import WeightAverage
from napari_tiled_unet.training.config import TrainConfig
from napari_tiled_unet.training.loss import make_loss
from napari_tiled_unet.training.optim import grad_scaler, make_optimizer
from napari_tiled_unet.training.prefetch import BatchSource, prefetch_ahead
from napari_tiled_unet.training.step import StepPlan

#: Consecutive non-finite losses under mixed precision before training stops as diverged.
MAX_SKIPPED_AMP_STEPS = 20

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


class RunState:
    """The device, optimizer, gradient scaler, loss and weight average of one training run.

    Made once, at the first step; *Continue* steps with the same objects, so Adam's moments
    and step counts (and any learning-rate schedule kept in the optimizer's state) carry on.

    Parameters
    ----------
    model : UNet
        The network to train; moved to the device and put in train mode.
    config : TrainConfig
    """

    def __init__(self, model: UNet, config: TrainConfig):
        self.device = resolve_device(config.device)
        self.plan = StepPlan.for_run(config, self.device)
        self.amp = self.plan.amp
        self.model = self.plan.prepare_model(model).train()
        self.optimizer = make_optimizer(self.model, config)
        self.scaler = grad_scaler() if self.amp else None
        self.loss_fn = make_loss(config.loss)
        self.prefetch = prefetch_ahead(config.prefetch, self.device)
        self.learning_rate = config.learning_rate
        self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay else None
        self._nonfinite = 0

    @property
    def offered(self) -> UNet:
        """The network the run validates, keeps and hands out: the weight average
        (``TrainConfig.ema_decay``) or the trained network itself."""
        return self.model if self.average is None else self.average.model

    def after_step(self) -> None:
        """Fold the new weights into the average, if the run keeps one."""
        if self.average is not None:
            self.average.update(self.model)

    def check_loss(self, loss: float, step: int) -> None:
        """Raise :class:`~napari_tiled_unet.errors.TrainingDiverged` once the loss stays
        non-finite: at once in float32, after :data:`MAX_SKIPPED_AMP_STEPS` steps in a row
        under mixed precision (where the gradient scaler skips a few overflowing steps)."""
        self._nonfinite = 0 if math.isfinite(loss) else self._nonfinite + 1
        if self._nonfinite > (0 if self.scaler is None else MAX_SKIPPED_AMP_STEPS):
            hint = "" if self.scaler is None else " or switch off TrainConfig.mixed_precision"
            raise TrainingDiverged(
                f"the training loss became {loss} at step {step}; lower "
                f"TrainConfig.learning_rate (now {self.learning_rate}){hint}"
            )

    @contextmanager
    def batches(self, draw: Callable[[], Batch], count: int) -> Iterator[Callable[[], Batch]]:
        """``next_batch()`` for ``count`` steps, each batch made ready to send by the step plan
        (:class:`~napari_tiled_unet.training.prefetch.BatchSource`: drawn between steps, or
        ahead in a thread where that does not fight torch's threads). The thread is shut down
        on leaving, however."""
        source = BatchSource(lambda: self.plan.host_batch(draw()), ahead=self.prefetch, limit=count)
        try:
            yield source.next
        finally:
            source.close()


class WeightSnapshots:
    """Copies of a model's weights taken between optimizer steps, for another thread.

    Another thread calls :meth:`take`; the training thread calls :meth:`serve` after each
    step and copies the weights (to CPU) when a copy is wanted. While no run is stepping,
    :meth:`take` copies at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wanted: list[tuple[threading.Event, list]] = []
        self.stepping = False
        self.model: UNet | None = None

    def serve(self) -> None:
        """Copy the weights for every waiting :meth:`take` (training thread, between steps)."""
        with self._lock:
            wanted, self._wanted = self._wanted, []
        if not wanted:
            return
        state = _cpu_copy(self.model)
        for event, box in wanted:
            box.append(state)
            event.set()

    def take(self, timeout: float = 60.0) -> dict[str, torch.Tensor] | None:
        """A CPU copy of the weights as of the end of a step; None if there is no model yet
        or none came within ``timeout`` seconds."""
        event, box = threading.Event(), []
        with self._lock:
            if self.model is None:
                return None
            if not self.stepping:
                return _cpu_copy(self.model)
            self._wanted.append((event, box))
        if not event.wait(timeout):
            with self._lock:
                self._wanted = [w for w in self._wanted if w[0] is not event]
            return box[0] if box else None
        return box[0]

    def begin(self, model: UNet) -> None:
        """A run starts stepping ``model`` (called by the training thread)."""
        with self._lock:
            self.model, self.stepping = model, True

    def release(self) -> None:
        """The run stopped stepping: answer waiting calls now (called by the training thread)."""
        with self._lock:
            self.stepping = False
        self.serve()


def _cpu_copy(model: UNet) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
