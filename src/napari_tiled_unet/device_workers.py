"""Several devices on one machine: one prediction worker per device, sharing the tiles.

:func:`device_networks` puts the network on each device (the first device gets the caller's
network, prepared by :func:`~napari_tiled_unet.forward.inference_setup`; each further one a
copy), and :func:`device_stages` binds one compute function per device for
:func:`~napari_tiled_unet.tiling.stitch.iter_run_plan`, whose worker threads take the next
batch whenever their device is free. Every worker runs the same per-tile function on the
same batches, so the result is the one of a single device.

CPU workers (``"cpu,cpu"``: how the tests exercise this path) share the cores: PyTorch's
thread count is process-wide, so for the run it is divided between them
(:func:`cpu_threads`) rather than each worker starting a full team of threads.

On one CUDA GPU, :func:`upload_ahead` moves each batch's upload to a second stream, so that
it overlaps the forward pass of the batch before (untested on a GPU here).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from napari_tiled_unet.device import free_memory
from napari_tiled_unet.forward import inference_setup, memory_format, tile_stages
from napari_tiled_unet.model.memory import default_batch
from napari_tiled_unet.normalization import Normalization

if TYPE_CHECKING:
    import torch

    from napari_tiled_unet.model.unet import UNet


@contextlib.contextmanager
def cpu_threads(workers: int) -> Iterator[None]:
    """PyTorch's intra-op threads divided between ``workers`` CPU workers (at least one
    each), put back after; nothing changes for fewer than two."""
    import torch

    if workers < 2:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before // workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def device_networks(net: UNet, devices: Sequence[torch.device]) -> Iterator[list[UNet]]:
    """``net`` on ``devices[0]`` and a copy of it on each further device, all ready for
    inference (eval mode, channels-last); ``net`` is put back as it was after."""
    with inference_setup(net, devices[0]), cpu_threads(sum(d.type == "cpu" for d in devices)):
        layout = memory_format(net.config.ndim)
        nets = [net] + [
            copy.deepcopy(net).to(device, memory_format=layout) for device in devices[1:]
        ]
        try:
            yield nets
        finally:
            del nets[1:]


def resolve_batch(
    batch_size: int | None, devices: Sequence[torch.device], per_tile_bytes: int
) -> int:
    """``batch_size``, or for None the default of the devices' kind and the free memory of
    the fullest one (:func:`~napari_tiled_unet.model.memory.default_batch`)."""
    if batch_size is not None:
        return int(batch_size)
    return default_batch(devices[0].type, per_tile_bytes, free_memory(devices))


def device_stages(
    nets: Sequence[UNet],
    devices: Sequence[torch.device],
    normalization: Normalization,
    output: str,
    name: str,
    precision: str,
) -> tuple[Callable[..., Any], Callable[..., Any] | list[Callable[..., Any]]]:
    """``prepare`` and ``tile_fn`` for :func:`~napari_tiled_unet.tiling.stitch.iter_run_plan`:
    :func:`~napari_tiled_unet.forward.tile_stages` per device; one compute function, or a
    list of them (one worker each) for several devices. Staging depends only on the kind
    of device (one kind per run: :func:`~napari_tiled_unet.device.resolve_devices`)."""
    stages = [
        tile_stages(n, d, normalization, output, name, precision)
        for n, d in zip(nets, devices, strict=True)
    ]
    computes = [compute for _prepare, compute in stages]
    if len(devices) == 1 and devices[0].type == "cuda":
        return upload_ahead(stages[0][0], computes[0], devices[0])
    return stages[0][0], computes if len(computes) > 1 else computes[0]


# --- CUDA only: untested on a GPU here; the CPU (and several devices) never take this path ---


class _Uploaded(NamedTuple):
    tensor: torch.Tensor  # the raw batch, on the device
    ready: torch.cuda.Event  # recorded on the upload stream after its copy


def upload_ahead(
    prepare: Callable[..., Any], compute: Callable[..., Any], device: torch.device
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``prepare`` and ``compute`` with the upload on a second CUDA stream: the reader
    threads copy batch k+1 to the device (from pinned memory) while the network runs batch
    k on the current stream, which waits for the copy's event before using it."""
    import torch

    stream = torch.cuda.Stream(device)

    def upload(batch: Any, tiles: Any) -> Any:
        staged = prepare(batch, tiles)
        if not isinstance(staged, torch.Tensor):  # normalised on the host: uploaded later
            return staged
        with torch.cuda.stream(stream):
            tensor = staged.to(device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(stream)
        return _Uploaded(tensor, ready)

    def run(staged: Any, tiles: Any) -> Any:
        if isinstance(staged, _Uploaded):
            current = torch.cuda.current_stream(device)
            current.wait_event(staged.ready)
            staged.tensor.record_stream(current)  # its memory is reused only after this use
            staged = staged.tensor
        return compute(staged, tiles)

    return upload, run
