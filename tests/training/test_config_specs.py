"""TrainConfig's network and augmentation specs, old flat configs, one mirror for training and
prediction, the scan's chunks of blocks, and the run's ModelInfo."""

import dataclasses
import itertools
import json

import numpy as np
import pytest
from _train_problems import disc_image, tiny_config

from napari_tiled_unet.config import NetworkSpec, UNetConfig
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.model.info import ModelInfo
from napari_tiled_unet.normalization import Normalization
from napari_tiled_unet.tiling.grid import BlockGrid
from napari_tiled_unet.tiling.plan import Tile
from napari_tiled_unet.tiling.stitch import read_tile
from napari_tiled_unet.training import TrainConfig, Trainer
from napari_tiled_unet.training.augment import Augmentation
from napari_tiled_unet.training.config import AugmentSpec
from napari_tiled_unet.training.pairs import PairShapeError, make_pair, read_window
from napari_tiled_unet.training.scan import chunk_window, scan_chunks

#: A TrainConfig.to_dict() as written into model files before the specs were nested.
OLD_FLAT = {
    "label_mode": "instance",
    "iterations": 200,
    "tile_shape": [64, 64],
    "batch_size": 2,
    "learning_rate": 0.001,
    "optimizer": "adam",
    "momentum": 0.99,
    "weight_decay": 0.0,
    "loss": "weighted_ce",
    "w0": 10.0,
    "sigma": 5.0,
    "class_balance": True,
    "foreground_fraction": None,
    "flips": True,
    "rotations": False,
    "elastic": True,
    "elastic_sigma": 8.0,
    "elastic_grid": 4,
    "intensity": False,
    "intensity_scale": 0.1,
    "intensity_shift": 0.2,
    "validation_fraction": 0.1,
    "validation_every": 50,
    "max_validation_tiles": 32,
    "best_metric": "val_iou",
    "seed": 3,
    "device": "cpu",
    "mixed_precision": True,
    "base_channels": 16,
    "depth": 3,
    "padding": "valid",
    "anisotropic_levels": 0,
    "normalization": {"mode": "percentile", "low": 1.0, "high": 99.8, "per_channel": True},
    "class_names": ["background", "interior", "boundary"],
    "checkpoint_path": None,
    "prefetch": True,
}


APPEARANCE_FIELDS = (
    "appearance",
    "gamma",
    "uneven_background",
    "blur",
    "poisson_noise",
    "gaussian_noise",
    "dimming",
    "scale",
)


def test_old_flat_configs_load_as_the_nested_config():
    config = TrainConfig.from_dict(OLD_FLAT)
    assert config.network == NetworkSpec(base_channels=16, depth=3, padding="valid")
    assert config.augment == AugmentSpec(
        rotations=False, elastic_sigma=8.0, elastic_grid=4, intensity=False, intensity_shift=0.2
    )
    nested = config.to_dict()
    assert nested["network"] == {
        "base_channels": 16,
        "depth": 3,
        "padding": "valid",
        "anisotropic_levels": 0,
    }
    assert "depth" not in nested and "flips" not in nested
    assert TrainConfig.from_dict(json.loads(json.dumps(nested))) == config
    # Every old field is kept: the nested dict flattened is the old one.
    flat = {k: v for k, v in nested.items() if k not in ("network", "augment")}
    flat = {**flat, **nested["network"], **nested["augment"]}
    assert Normalization.from_dict(flat.pop("normalization")) == Normalization.from_dict(
        OLD_FLAT["normalization"]
    )
    # Fields added since come in at their defaults: fine_tune_learning_rate (issue 13),
    # appearance and scale augmentation, the weight average (issue 17).
    added = {k: flat.pop(k) for k in set(flat) - set(OLD_FLAT)}
    assert added == {
        "fine_tune_learning_rate": None,
        "ema_decay": 0.0,
        **{k: getattr(AugmentSpec(), k) for k in APPEARANCE_FIELDS},
    }
    assert flat == {k: v for k, v in OLD_FLAT.items() if k != "normalization"}


def test_specs_are_validated_and_not_mixed_with_flat_fields():
    with pytest.raises(ValueError, match="both 'network' and its fields"):
        TrainConfig.from_dict({"network": {"depth": 2}, "depth": 3})
    with pytest.raises(ValueError, match="unknown NetworkSpec keys"):
        TrainConfig.from_dict({"network": {"levels": 2}})
    with pytest.raises(ValueError, match=r"TrainConfig\.network must be a NetworkSpec"):
        TrainConfig(network=3)
    with pytest.raises(ValueError, match=r"AugmentSpec.elastic_grid must be an integer >= 2"):
        AugmentSpec(elastic_grid=1)
    with pytest.raises(ValueError, match=r"AugmentSpec.intensity_scale must be >= 0"):
        TrainConfig(augment=AugmentSpec(intensity_scale=-1))
    assert TrainConfig(network={"depth": 2}).network == NetworkSpec(depth=2)
    assert TrainConfig().network == NetworkSpec(32, 4, "same", 0)
    assert TrainConfig().augment == AugmentSpec()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"depth": 7}, "depth must be between 1 and 6"),
        ({"depth": 0}, "depth must be a positive integer"),
        ({"base_channels": 2.5}, "base_channels must be a positive integer"),
        ({"padding": "reflect"}, "padding must be one of"),
        ({"depth": 2, "anisotropic_levels": 3}, r"anisotropic_levels .* between 0 and depth \(2\)"),
    ],
)
def test_network_spec_and_unet_config_share_their_checks(fields, message):
    with pytest.raises(ValueError, match="NetworkSpec." + message):
        NetworkSpec(**fields)
    with pytest.raises(ValueError, match="UNetConfig." + message):
        UNetConfig(ndim=3, **fields)


def test_network_spec_builds_the_unet_config():
    spec = NetworkSpec(base_channels=8, depth=3, padding="valid", anisotropic_levels=1)
    config = spec.unet_config(in_channels=2, num_classes=3, ndim=3)
    expected = UNetConfig(2, 3, depth=3, base_channels=8, padding="valid", ndim=3)
    assert config == dataclasses.replace(expected, anisotropic_levels=1)
    assert config.network == spec
    with pytest.raises(ValueError, match="for 3D networks"):
        spec.unet_config(ndim=2)


def test_augmentation_is_its_spec_applied():
    spec = AugmentSpec(flips=False, elastic_sigma=0.0, intensity_scale=0.3)
    augmentation = Augmentation.from_spec(spec)
    assert isinstance(augmentation, AugmentSpec) and not augmentation.elastic
    assert dataclasses.asdict(augmentation) == {**dataclasses.asdict(spec), "elastic": False}


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_training_mirrors_the_border_as_prediction_does(size):
    """Windows of any reach (also many times the image) read the same pixels as a tile."""
    rng = np.random.default_rng(size)
    image = rng.random((2, size, size + 2)).astype(np.float32)
    for start in itertools.product((-40, -3, -1, 0, 1), (-17, -2, 0)):
        shape = (45, 31)
        tile = Tile(0, start, shape, (slice(0, 1),) * 2, (slice(0, 1),) * 2)
        stop = tuple(s + n for s, n in zip(start, shape, strict=True))
        got = read_window(image, start, stop, channel_axis=True)
        np.testing.assert_array_equal(got, read_tile(image, tile))
        np.testing.assert_array_equal(read_window(image[0], start, stop), got[0])


@pytest.mark.parametrize(
    ("spatial", "block", "budget"),
    [((100, 70), (32, 32), 2048), ((100, 70), (32, 32), 2**22), ((9, 50, 41), (4, 8, 8), 900)],
)
def test_scan_chunks_hold_whole_blocks_within_the_budget(spatial, block, budget):
    blocks = BlockGrid(spatial, block)
    covered = np.zeros(spatial, int)
    seen = []
    for chunk in scan_chunks(blocks, budget):
        window = chunk_window(blocks, chunk)
        covered[window] += 1
        pixels = int(np.prod([w.stop - w.start for w in window]))
        indices = list(itertools.product(*(range(s.start, s.stop) for s in chunk)))
        assert pixels <= budget or len(indices) == 1
        seen.extend(indices)
    assert (covered == 1).all()
    assert seen == sorted(seen) == list(blocks.indices())  # every block once, in C order


def test_the_run_info_is_typed_and_its_dict_is_the_metadata():
    image, instances = disc_image(size=64, count=4)
    trainer = Trainer(image, (instances > 0).astype(np.uint8), tiny_config(iterations=1))
    model = trainer.run()
    info = trainer.info()
    assert isinstance(model.info, ModelInfo) and model.info == info
    assert info.class_names == ("background", "class 1") and info.tile_shape == (32, 32)
    assert info.channels is None and info.source_channels is None
    assert model.metadata == info.to_dict()
    assert TrainConfig.from_dict(info.training["config"]) == trainer.config


def test_pair_errors_are_user_input_errors():
    with pytest.raises(UserInputError, match="differ in shape"):
        make_pair(np.zeros((5, 6)), np.zeros((5, 7), np.uint8), "image", "labels", 2)
    assert issubclass(PairShapeError, UserInputError)
