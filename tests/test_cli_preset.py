"""``napari-tiled-unet train --preset``: the preset sets the network, tile and batch; explicit
options win."""

import numpy as np
import pytest
import tifffile

import napari_tiled_unet.jobs
from napari_tiled_unet.cli import build_parser, main
from napari_tiled_unet.config import NetworkSpec
from napari_tiled_unet.errors import UserInputError


@pytest.fixture
def requests(tmp_path, monkeypatch):
    """Runs ``train`` up to planning and returns the TrainRequest it built."""
    image, labels = tmp_path / "im.tif", tmp_path / "lab.tif"
    tifffile.imwrite(image, np.zeros((64, 64), np.uint8))
    tifffile.imwrite(labels, np.zeros((64, 64), np.uint8))
    seen = []

    def plan_training(request, *args, **kwargs):
        seen.append(request)
        raise UserInputError("stop here")

    monkeypatch.setattr(napari_tiled_unet.jobs, "plan_training", plan_training)

    def run(*options):
        argv = ["train", "--image", str(image), "--labels", str(labels)]
        main([*argv, "-o", str(tmp_path / "m.pt"), *options])
        return seen.pop()

    return run


def test_interactive_preset_sets_network_tile_and_batch(requests):
    request = requests("--preset", "interactive")
    assert request.config.network == NetworkSpec(base_channels=16, depth=3)
    assert request.config.tile_shape == (192, 192) and request.tile == 192
    assert request.config.batch_size == 4


def test_explicit_options_override_the_preset_and_default_is_unchanged(requests):
    request = requests("--preset", "interactive", "--depth", "4", "--tile", "128", "--batch", "2")
    assert request.config.network == NetworkSpec(base_channels=16, depth=4)
    assert (request.config.tile_shape, request.config.batch_size) == ((128, 128), 2)
    # A value typed on the command line wins even when it equals the default's.
    typed = requests("--preset", "interactive", "--base-channels", "32", "--batch", "4")
    assert typed.config.network == NetworkSpec(base_channels=32, depth=3)
    default = requests()
    assert default.config.network == NetworkSpec()
    assert (default.config.tile_shape, default.config.batch_size) == ((256, 256), 4)


def test_help_lists_the_presets(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = capsys.readouterr().out
    assert "--preset {default,interactive}" in out and "base 16, depth 3" in out
