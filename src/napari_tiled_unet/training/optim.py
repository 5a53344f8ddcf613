"""One optimisation step, and the optimizer and gradient scaler a training run steps with."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from napari_tiled_unet.model.unet import UNet
from napari_tiled_unet.training.config import TrainConfig

#: ``loss(logits, targets, weights)`` as made by :func:`~napari_tiled_unet.training.loss.make_loss`.
LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def make_optimizer(model: UNet, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam, or SGD with momentum, over ``model``'s parameters as ``config`` says."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )


def grad_scaler() -> torch.amp.GradScaler:
    """A CUDA gradient scaler (``torch.amp`` from torch 2.3, ``torch.cuda.amp`` before)."""
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


def train_step(
    model: UNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    loss_fn: LossFunction,
    device: torch.device,
    amp: bool,
    images: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
) -> float:
    """One optimizer step on a batch; returns the loss.

    Parameters
    ----------
    model : UNet
        On ``device``, in train mode.
    optimizer : torch.optim.Optimizer
    scaler : GradScaler or None
        Scales the loss under mixed precision (a step with non-finite gradients is skipped).
    loss_fn : callable
        ``loss_fn(logits, targets, weights)``.
    device : torch.device
    amp : bool
        Run the forward pass under float16 autocast.
    images : ndarray or Tensor of float32, shape (B, C, *tile_shape)
    targets : ndarray or Tensor of int64, shape (B, *out_shape)
    weights : ndarray or Tensor of float32, shape (B, *out_shape)
        Host arrays, or tensors (e.g. pinned, see :mod:`~napari_tiled_unet.training.step`).
    """
    x = torch.as_tensor(images).to(device, non_blocking=True)
    t = torch.as_tensor(targets).to(device, non_blocking=True)
    w = torch.as_tensor(weights).to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        logits = model(x)
    loss = loss_fn(logits, t, w)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return float(loss.detach())
