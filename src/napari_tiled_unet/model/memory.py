"""How much memory one tile's forward pass takes, and how large a default tile may be.

Inference keeps few maps alive at once (:meth:`~napari_tiled_unet.model.unet.UNet.forward`
lets each skip go once it is concatenated), so the peak sits at the last up-sampling step, at
full resolution: the level-1 map (``2 * base`` channels at ``1/f`` of the voxels, ``f`` the
first pooling window's size), the up-sampled map and the skip (``base`` each) and their
concatenation (``2 * base``), i.e. ``4 * base + 2 * base / f`` values per input voxel. The tile
itself, the logits, the softmax and the class map add ``in_channels + 2 * num_classes + 2``.
The estimate adds 30 % to that count: the resident memory the first forward pass in a fresh
process added came to 0.69–1.06 times the estimate in two runs of ``benchmarks/tile_memory.py``
(11 networks and tiles: 2D and 3D, base 8 to 64, 'same' and 'valid'; the second run is in
``benchmarks/results/tile_memory.md``), the highest for small tiles, where one-off buffers of
the convolution library weigh most.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from napari_tiled_unet.config import UNetConfig

#: Memory one tile's forward pass may take when no tile shape is given: the default tile is the
#: largest (up to :data:`~napari_tiled_unet.tiling.plan.DEFAULT_TILE_EDGE`) whose estimate
#: fits. 768 MiB keeps the 1280 px tile of the bundled base-16 2D model (~660 MiB estimated,
#: 460–590 MiB measured), with which the command line predicts a 4 GiB TIFF in under 1.2 GiB.
TILE_MEMORY_BUDGET = 768 * 2**20

_FLOAT32 = 4
_MARGIN = 1.3


def values_per_voxel(config: UNetConfig) -> float:
    """Float32 values alive at the forward pass's peak, per voxel of the input tile."""
    base = config.base_channels
    first_pool = 4 if config.ndim == 2 or config.anisotropic_levels else 8
    network = 4 * base + 2 * base / first_pool
    return network + config.in_channels + 2 * config.num_classes + 2


def tile_memory(config: UNetConfig, tile_shape: Sequence[int], batch_size: int = 1) -> int:
    """Estimated peak memory (bytes) of predicting a batch of ``tile_shape`` tiles.

    A float32 estimate (bfloat16/float16 autocast needs less); ``tile_shape`` is the network
    input (context included).
    """
    voxels = math.prod(int(n) for n in tile_shape) * batch_size
    return math.ceil(values_per_voxel(config) * _MARGIN * _FLOAT32 * voxels)


def voxel_budget(config: UNetConfig, budget: int = TILE_MEMORY_BUDGET) -> int:
    """The most input voxels one tile of this network may hold within ``budget`` bytes."""
    return int(budget // (values_per_voxel(config) * _MARGIN * _FLOAT32))


#: The most tiles :func:`default_batch` puts in one forward pass on a GPU.
MAX_DEFAULT_BATCH = 8
#: The share of a GPU's free memory the default batch's estimate may take.
GPU_MEMORY_SHARE = 0.5


def default_batch(device_type: str, per_tile_bytes: int, free_bytes: int | None) -> int:
    """Tiles per forward pass when none is given: 1 on the CPU (and MPS, whose memory is the
    host's); on a GPU (``"cuda"``), as many tiles as fit :data:`GPU_MEMORY_SHARE` of its
    ``free_bytes`` by their estimate ``per_tile_bytes`` (:func:`tile_memory`), from 1 up to
    :data:`MAX_DEFAULT_BATCH`: more tiles per call keep a GPU busier, and the other half
    leaves room for the estimate's error and the next batch in flight. ``free_bytes`` None
    (unknown): 1. Not yet measured on a GPU.
    """
    if device_type != "cuda" or not free_bytes or per_tile_bytes <= 0:
        return 1
    fits = int(free_bytes * GPU_MEMORY_SHARE // per_tile_bytes)
    return max(1, min(MAX_DEFAULT_BATCH, fits))


def format_bytes(n: int) -> str:
    """``n`` bytes as MiB below 1 GiB, else GiB, e.g. ``"494 MiB"``, ``"3.7 GiB"``."""
    return f"{n / 2**20:.0f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"
