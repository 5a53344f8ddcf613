"""Tiny synthetic problems shared by the training tests (plain numpy and torch, no napari)."""

import numpy as np


def disc_image(size=96, count=8, radius=6, seed=0, noise=0.1):
    """Bright discs on noise: float32 image (Y, X) and uint16 instance labels (Y, X).

    Discs may touch but never overlap (a later disc does not overwrite an earlier one).
    """
    rng = np.random.default_rng(seed)
    image = rng.normal(0.2, noise, (size, size)).astype(np.float32)
    labels = np.zeros((size, size), np.uint16)
    yy, xx = np.mgrid[:size, :size]
    placed = 0
    for _ in range(200):
        if placed == count:
            break
        cy, cx = rng.integers(radius, size - radius, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        if labels[disc].any():
            continue
        placed += 1
        labels[disc] = placed
        image[disc] += 0.8
    return image, labels


def tiny_config(**overrides):
    """A TrainConfig for second-long CPU runs.

    ``overrides`` may also name fields of its network (e.g. ``padding="valid"``) or
    augmentation (e.g. ``elastic=False``) spec.
    """
    import dataclasses

    from napari_tiled_unet.config import NetworkSpec
    from napari_tiled_unet.training import TrainConfig
    from napari_tiled_unet.training.config import AugmentSpec

    network = dict(base_channels=4, depth=2)
    augment = {}
    settings = dict(
        iterations=40,
        tile_shape=(32, 32),
        batch_size=4,
        learning_rate=1e-2,
        validation_every=20,
        device="cpu",
        prefetch=False,
    )
    for key, value in overrides.items():
        if key in {f.name for f in dataclasses.fields(NetworkSpec)}:
            network[key] = value
        elif key in {f.name for f in dataclasses.fields(AugmentSpec)}:
            augment[key] = value
        else:
            settings[key] = value
    return TrainConfig(network=NetworkSpec(**network), augment=AugmentSpec(**augment), **settings)
