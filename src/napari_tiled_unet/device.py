"""Choosing the torch device."""

from __future__ import annotations

from napari_tiled_unet.errors import UserInputError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("float32", "bfloat16", "float16")  # of the forward pass


def resolve_device(device: str = "auto"):
    """Return a ``torch.device`` for "auto" (cuda, then mps, then cpu), "cpu", "cuda" or "mps".

    Raises
    ------
    ValueError
        For an unknown name, or a device this machine does not have.
    """
    import torch

    name = str(device)
    base = name.split(":")[0]
    if base not in DEVICES:
        raise UserInputError(f"device must be one of {DEVICES} (or 'cuda:N'), got {device!r}")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise UserInputError(
            "device 'cuda' was requested but PyTorch sees no CUDA GPU; use 'cpu' or 'auto'"
        )
    if base == "mps" and not torch.backends.mps.is_available():
        raise UserInputError(
            "device 'mps' was requested but this machine has no Apple MPS; use 'cpu' or 'auto'"
        )
    return torch.device(name)
