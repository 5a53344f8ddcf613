"""Choosing the torch device (or devices: one prediction worker each)."""

from __future__ import annotations

from collections.abc import Sequence

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


def resolve_devices(device: str | Sequence[str] = "auto") -> list:
    """One ``torch.device`` per prediction worker, for a name or a list of names.

    ``"cuda:0,cuda:1"`` (a comma-separated string) or ``["cuda:0", "cuda:1"]``: one worker
    per entry; ``"cuda:all"``: one per CUDA GPU; a single name: one worker
    (:func:`resolve_device`). A device may repeat (``"cpu,cpu"``: two CPU workers sharing
    the cores, which tests the multi-device path without a GPU).

    Raises
    ------
    UserInputError
        For an empty list, an unknown name, a device this machine does not have (also
        ``"cuda:all"`` without CUDA), or devices of different kinds (e.g. cpu and cuda).
    """
    import torch

    names = device.split(",") if isinstance(device, str) else [str(d) for d in device]
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise UserInputError(f"device names no device: {device!r}; e.g. 'cuda:0,cuda:1' or 'cpu'")
    devices = []
    for name in names:
        if name == "cuda:all":
            if not torch.cuda.is_available():
                raise UserInputError(
                    "device 'cuda:all' was requested but PyTorch sees no CUDA GPU; use 'cpu' "
                    "or 'auto'"
                )
            devices += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        else:
            devices.append(resolve_device(name))
    kinds = sorted({d.type for d in devices})
    if len(kinds) > 1:
        raise UserInputError(
            f"device {device!r} mixes kinds ({', '.join(kinds)}); list devices of one kind, "
            "e.g. 'cuda:0,cuda:1'"
        )
    return devices


def check_one_device(device: object) -> None:
    """Raise a UserInputError for several devices where a run takes one per worker (dask)."""
    if not isinstance(device, str) or "," in device or device == "cuda:all":
        raise UserInputError(
            f"device {device!r}: a dask run takes one device per worker (e.g. 'cuda'); for "
            "several GPUs start one dask worker per GPU (CUDA_VISIBLE_DEVICES)"
        )


def free_memory(devices: Sequence) -> int | None:
    """Free bytes on the fullest of ``devices`` (``torch.cuda.mem_get_info``); None unless
    they are CUDA GPUs (the CPU and MPS share the host's memory). Untested on a GPU here."""
    import torch

    if not devices or any(d.type != "cuda" for d in devices):
        return None
    return min(int(torch.cuda.mem_get_info(d)[0]) for d in devices)
