"""How a training run feeds its step: the model's memory format, pinned batches, mixed precision.

:class:`StepPlan` holds the decisions, made once per run from the configuration and the device
(the numbers behind them are in ``benchmarks/results/train_throughput.md``):

- *channels-last* (NHWC) weights for 2D networks on CPU and CUDA: oneDNN's (CPU) and cuDNN's
  (CUDA, float16) convolutions run faster on it; the input needs no conversion, since a
  convolution's output follows its weights' format.
- *pinned* host memory for batches bound for CUDA, so the copy to the device is asynchronous.
- float16 *autocast* with a gradient scaler on CUDA when ``TrainConfig.mixed_precision`` is on;
  never on CPU or MPS (autocast is then switched off, not just unused).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_tiled_unet.training.config import TrainConfig

#: Device types whose 2D convolutions measured (CPU) or are documented (CUDA) faster channels-last.
CHANNELS_LAST_DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class StepPlan:
    """How one run's training step is fed.

    Parameters
    ----------
    device : torch.device
        Where the step runs.
    amp : bool
        float16 autocast and a gradient scaler (CUDA only).
    channels_last : bool
        Keep the network's weights (and so its activations) channels-last (2D networks only).
    pin_memory : bool
        Copy batches into page-locked host memory before sending them (CUDA only).
    """

    device: torch.device
    amp: bool
    channels_last: bool
    pin_memory: bool

    @classmethod
    def for_run(cls, config: TrainConfig, device: torch.device) -> StepPlan:
        """The plan for ``config`` on ``device``."""
        cuda = device.type == "cuda"
        return cls(
            device=device,
            amp=bool(config.mixed_precision and cuda),
            channels_last=config.ndim == 2 and device.type in CHANNELS_LAST_DEVICES,
            pin_memory=cuda,
        )

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` moved to the device (in place, as ``Module.to``) in the plan's format."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def host_batch(self, batch: Sequence[np.ndarray]) -> tuple[np.ndarray | torch.Tensor, ...]:
        """A batch ready to send: pinned tensors when the plan pins, else the arrays as they are.

        Safe to call in a background thread (pinning is the slow part worth doing there).
        """
        if not self.pin_memory:
            return tuple(batch)
        return tuple(torch.from_numpy(np.ascontiguousarray(a)).pin_memory() for a in batch)
