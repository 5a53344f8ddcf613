"""Training 3D networks, isotropic and anisotropic, 'same' and 'valid', dense and sparse labels."""

import numpy as np
import pytest
from _train_problems import tiny_config

from napari_tiled_unet import predict
from napari_tiled_unet.config import NetworkSpec
from napari_tiled_unet.training import TrainConfig, Trainer, train
from napari_tiled_unet.training.sampler import TileLayout


@pytest.fixture(scope="module")
def blobs():
    """A 24x48x48 volume with three bright ellipsoidal blobs, and their semantic labels."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:24, :48, :48]
    labels = np.zeros((24, 48, 48), np.uint8)
    for cz, cy, cx in ((6, 12, 12), (12, 30, 34), (18, 14, 36)):
        labels[((zz - cz) / 4) ** 2 + ((yy - cy) / 7) ** 2 + ((xx - cx) / 7) ** 2 <= 1] = 1
    volume = rng.normal(0.2, 0.1, labels.shape).astype(np.float32) + 0.8 * labels
    return volume, labels


def _config(**overrides):
    settings = dict(
        tile_shape=(16, 32, 32),
        iterations=3,
        batch_size=1,
        validation_every=3,
        elastic=False,
    )
    settings.update(overrides)
    return tiny_config(**settings)


@pytest.mark.parametrize(
    ("padding", "levels", "tile_shape"),
    [
        ("same", 0, (16, 32, 32)),
        ("same", 1, (8, 32, 32)),  # Z grid 2**(2 - 1)
        ("valid", 1, (28, 48, 48)),  # Z trims less than Y and X
    ],
)
def test_3d_training_per_axis_geometry(blobs, padding, levels, tile_shape, tmp_path):
    volume, labels = blobs
    config = _config(padding=padding, anisotropic_levels=levels, tile_shape=tile_shape)
    trainer = Trainer(volume, labels, config)
    geometry = trainer.layout
    if padding == "valid":
        assert geometry.offsets[0] < geometry.offsets[1] == geometry.offsets[2]
    model = trainer.run()
    assert model.config.ndim == 3 and model.config.anisotropic_levels == levels
    assert model.metadata["axes"] == "ZYX"
    assert model.info.training["config"]["network"]["anisotropic_levels"] == levels
    from napari_tiled_unet.model.modelfile import load_model, save_model

    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.config.anisotropic_levels == levels
    assert predict(volume, loaded).shape == volume.shape


def test_3d_sparse_scribbles_train(blobs):
    volume, labels = blobs
    sparse = np.zeros_like(labels)  # 0 = not annotated
    sparse[12, 26:34, 30:38] = 2  # a stroke in a blob: class 1
    sparse[3, 30:44, 4:8] = 1  # a stroke in the background: class 0
    model = train(volume, sparse, _config(label_mode="sparse", anisotropic_levels=1))
    assert model.config.num_classes == 2 and model.metadata["class_names"] == ["label 1", "label 2"]
    assert predict(volume, model).shape == volume.shape


def test_tile_layout_per_axis_offsets():
    layout = TileLayout((20, 44, 44), (4, 4, 4), (8, 20, 20), 2)
    assert layout.read_bounds((10, 10, 10)) == ((0, -12, -12), (24, -12 + 48, -12 + 48))
    cropped = layout.crop(np.zeros((3, 24, 48, 48)), [o + 2 for o in layout.offsets])
    assert cropped.shape == (3, 4, 4, 4)
    with pytest.raises(ValueError, match="one entry per axis"):
        TileLayout((16, 16), (16, 16), (0, 0, 0))


def test_3d_tile_errors_are_clear(blobs):
    volume, labels = blobs
    with pytest.raises(ValueError, match="anisotropic_levels is for 3D"):
        TrainConfig(network=NetworkSpec(anisotropic_levels=1))
    with pytest.raises(ValueError, match="between 0 and depth"):
        TrainConfig(tile_shape=(16, 64, 64), network=NetworkSpec(depth=2, anisotropic_levels=3))
    # A depth-4 isotropic 'valid' 3D network needs a large tile along Z too.
    with pytest.raises(ValueError, match=r"3D U-Net.*smallest input.*along axis Z"):
        Trainer(volume, labels, _config(padding="valid", depth=4, tile_shape=(20, 188, 188)))
    # The volume is thinner along Z than a tile's label window.
    with pytest.raises(ValueError, match="24 px along Z"):
        Trainer(volume, labels, _config(tile_shape=(32, 32, 32)))


def test_unpainted_planes_of_a_stack_train_plane_by_plane(blobs):
    volume, labels = blobs
    sparse = np.zeros_like(labels)
    sparse[12, 26:34, 30:38] = 2
    sparse[12, 40:46, 4:10] = 1
    config = tiny_config(iterations=1, validation_fraction=0, label_mode="sparse")
    trainer = Trainer(volume, sparse, config, axes="ZYX")
    assert len(trainer.pairs) == 24
    model = trainer.run()
    assert [p.image_name for p in trainer.pairs] == [
        "image of pair 0 at Z=12"
    ]  # unpainted planes out
    assert model.config.ndim == 2
    # Semantic labels: an empty plane means "background only" and is kept...
    semantic = np.zeros_like(labels)
    semantic[12] = labels[12]
    trainer = Trainer(
        volume, semantic, tiny_config(iterations=1, validation_fraction=0), axes="ZYX"
    )
    trainer.run()
    assert len(trainer.pairs) == 24
    # ...but a stack without any label is an error that names it.
    with pytest.raises(ValueError, match=r"empty \(all 0\) in every plane"):
        train(volume, np.zeros_like(labels), tiny_config(iterations=1), axes="ZYX")
