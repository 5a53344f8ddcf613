"""The shape of a 3D training tile: as deep along Z as the training volumes allow."""

from __future__ import annotations

from napari_tiled_unet.errors import UserInputError


def volume_tile_shape(
    edge: int,
    planes: int,
    *,
    depth: int = 4,
    padding: str = "same",
    anisotropic_levels: int = 0,
) -> tuple[int, int, int]:
    """A 3D training tile ``(Z, edge, edge)`` as deep as volumes of ``planes`` planes allow.

    Z is the largest input size up to ``edge`` that the network accepts along Z and whose label
    window (the network output) fits in ``planes`` planes. 'same' networks need no more than
    that: their tiles need not hold the receptive field (107 voxels per side for depth 4),
    only prediction does, and the tiling engine adds it there.

    Parameters
    ----------
    edge : int
        Tile size in Y and X, and the largest in Z.
    planes : int
        Planes (Z size) of the thinnest training volume.
    depth, padding, anisotropic_levels
        The network, as in :class:`~napari_tiled_unet.config.NetworkSpec`.

    Raises
    ------
    ValueError
        If no tile depth fits, saying what the network needs along Z and what would help.
    """
    from napari_tiled_unet.config import UNetConfig
    from napari_tiled_unet.model.geometry import UNetGeometry

    z_axis = UNetGeometry.from_config(
        UNetConfig(depth=depth, padding=padding, ndim=3, anisotropic_levels=anisotropic_levels)
    ).axes[0]
    for n in range(edge, 0, -1):
        out = z_axis.output_size(n)
        if out is not None and out <= planes:
            return (n, edge, edge)
    smallest = z_axis.min_input_size
    raise UserInputError(
        f"a 3D training tile of a depth-{depth} '{padding}' U-Net with {anisotropic_levels} "
        f"XY-only (anisotropic) level(s) takes Z sizes in {z_axis.grid}-plane steps (at least "
        f"{smallest} planes in, {z_axis.output_size(smallest)} labelled out), up to the tile "
        f"size {edge}, but the thinnest volume has {planes} planes. Use a smaller depth, more "
        f"anisotropic levels, thicker volumes, or a 2D model (plane by plane)"
    )
