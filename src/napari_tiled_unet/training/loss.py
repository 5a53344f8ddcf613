"""Training losses: the paper's pixel-weighted cross-entropy and a soft Dice loss.

All take logits ``(B, C, *spatial)``, integer targets ``(B, *spatial)`` and a pixel weight map
``(B, *spatial)`` whose zeros mark pixels that do not count (not annotated, held out).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from napari_tiled_unet.errors import UserInputError

LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def weighted_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Pixel-weighted cross-entropy ``sum(w * -log p_target) / sum(w)``.

    Parameters
    ----------
    logits : Tensor, shape (B, C, *spatial)
    targets : Tensor of int64, shape (B, *spatial)
        Class per pixel (any value where the weight is 0).
    weights : Tensor of float, shape (B, *spatial)
        Weight per pixel, >= 0 (the paper's ``w(x)``).

    Returns
    -------
    Tensor, scalar
        0 (still connected to the graph) when every weight is 0.
    """
    logits = logits.float()
    ce = F.cross_entropy(logits, targets, reduction="none")
    total = weights.sum()
    if total <= 0:
        return logits.sum() * 0.0
    return (ce * weights).sum() / total


def dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """Soft Dice loss ``1 - mean_c (2 |P_c G_c| + s) / (|P_c| + |G_c| + s)`` over pixels with weight > 0.

    Parameters
    ----------
    logits : Tensor, shape (B, C, *spatial)
    targets : Tensor of int64, shape (B, *spatial)
    weights : Tensor of float, shape (B, *spatial)
        Only its support (weight > 0) is used, as a mask.
    smooth : float
        Added to numerator and denominator so absent classes score 1, not 0/0.

    Returns
    -------
    Tensor, scalar in [0, 1]
    """
    logits = logits.float()
    num_classes = logits.shape[1]
    probabilities = torch.softmax(logits, dim=1)
    mask = (weights > 0).unsqueeze(1).to(probabilities.dtype)
    onehot = F.one_hot(targets.clamp(0, num_classes - 1), num_classes).movedim(-1, 1)
    onehot = onehot.to(probabilities.dtype) * mask
    probabilities = probabilities * mask
    dims = (0, *range(2, logits.ndim))
    intersection = (probabilities * onehot).sum(dims)
    denominator = probabilities.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return 1 - dice.mean()


def make_loss(name: str) -> LossFunction:
    """The loss function for ``TrainConfig.loss``.

    "weighted_ce" and "ce" are both :func:`weighted_cross_entropy` (the sampler gives "ce" a
    0/1 weight map); "dice" is :func:`dice_loss`; "weighted_ce+dice" is their sum.
    """
    if name in ("weighted_ce", "ce"):
        return weighted_cross_entropy
    if name == "dice":
        return dice_loss
    if name == "weighted_ce+dice":

        def combined(logits, targets, weights):
            return weighted_cross_entropy(logits, targets, weights) + dice_loss(
                logits, targets, weights
            )

        return combined
    raise UserInputError(
        f"unknown loss {name!r}; use 'weighted_ce', 'ce', 'dice' or 'weighted_ce+dice'"
    )
