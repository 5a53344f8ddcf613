"""Small random networks for the core tests."""

import torch


def tiny_unet(padding="same", depth=2, num_classes=3, in_channels=1, base_channels=4):
    """A small random U-Net; biases randomised so outputs vary across the image."""
    from napari_tiled_unet import UNet

    net = UNet(in_channels, num_classes, depth=depth, base_channels=base_channels, padding=padding)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 1:
                p.uniform_(-0.1, 0.1)
    return net.eval()
