"""An exponential moving average (EMA) of a network's weights over the training steps.

With a constant learning rate the last weights of a run are one point of where the optimizer
wanders; which point depends on the seed, and so did the left-out scores of the default model's
recipe (``benchmarks/results/crossdomain_eval.md``, "Seeds"). The average of the last steps
sits nearer the middle of that wandering. When ``TrainConfig.ema_decay`` is set, the averaged
network is the one a run offers: it is validated, kept as the best, previewed and saved; the
optimizer still steps the raw weights. On the cross-domain folds it narrowed the seed spread but
lowered the score on the unseen source ("Weight average and flip average" there), so it is off
by default.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel

from napari_tiled_unet.model.unet import UNet

#: The decay after ``n`` averaged steps is ``min(decay, (1 + n) / (EMA_WARMUP + n))``, so the
#: first steps, far from where training ends, are forgotten quickly.
EMA_WARMUP = 10


def ema_rate(decay: float, averaged_steps: int) -> float:
    """The share of the newest weights in the average after ``averaged_steps`` steps."""
    n = int(averaged_steps)
    return 1.0 - min(float(decay), (1.0 + n) / (EMA_WARMUP + n))


class WeightAverage:
    """An EMA of ``model``'s parameters, updated after each optimizer step.

    Parameters
    ----------
    model : UNet
        The network being trained (its device and memory format are kept by the copy).
    decay : float
        In (0, 1): the weight of the old average at each update once warmed up (0.995: an
        average over roughly the last 200 steps of a long run; about the last ``n / 9`` steps
        while the warm-up caps the decay, up to ``n`` ~ 1800).
    """

    def __init__(self, model: UNet, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"the EMA decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self._average = AveragedModel(model, multi_avg_fn=self._update)
        self._average.requires_grad_(False)

    def _update(self, averaged: list, current: list, num_averaged: torch.Tensor) -> None:
        rate = ema_rate(self.decay, int(num_averaged))
        for old, new in zip(averaged, current, strict=True):
            old.lerp_(new, rate)

    def update(self, model: UNet) -> None:
        """Fold ``model``'s current parameters into the average (the first call copies them)."""
        self._average.update_parameters(model)

    @property
    def model(self) -> UNet:
        """The averaged network (same class, device and format as the trained one)."""
        return self._average.module

    @property
    def steps(self) -> int:
        """How many updates the average holds."""
        return int(self._average.n_averaged)
