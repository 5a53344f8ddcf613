"""Small random networks for the tests: one factory, ``tiny_unet``."""

import torch


def tiny_unet(padding="same", depth=2, num_classes=3, in_channels=1, base_channels=4, **config):
    """A small random U-Net in eval mode; biases randomised so outputs vary across the image.

    ``config``: further ``UNet`` arguments, e.g. ``ndim=3, anisotropic_levels=1``. The weights
    come from torch's global generator, seeded for every test by the autouse fixture in
    ``tests/conftest.py``: a test builds the same networks on every run.
    """
    from napari_tiled_unet import UNet

    net = UNet(
        in_channels,
        num_classes,
        depth=depth,
        base_channels=base_channels,
        padding=padding,
        **config,
    )
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 1:
                p.uniform_(-0.1, 0.1)
    return net.eval()
