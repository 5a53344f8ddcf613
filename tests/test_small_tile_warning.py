"""A requested tile that multiplies the work is warned about, on every face (issue 15 §4)."""

import numpy as np
import pytest
import tifffile

from _nets import tiny_unet
from napari_tiled_unet import save_model
from napari_tiled_unet.cli import main
from napari_tiled_unet.events import Progress, run_to_completion
from napari_tiled_unet.jobs import PredictRequest, iter_predict_job
from napari_tiled_unet.jobs.work import (
    MAX_WORK_MULTIPLE,
    iter_with_warning,
    planned_work,
    small_tile_warning,
)
from napari_tiled_unet.planning import plan_for


@pytest.fixture
def net():
    return tiny_unet("same", depth=2)  # context 23 px per side


def test_the_warning_names_the_work_and_the_automatic_tile(net):
    shape = (300, 400)
    small = plan_for(shape, net, (64, 64))
    automatic = plan_for(shape, net)
    assert planned_work(small) > MAX_WORK_MULTIPLE > planned_work(automatic)
    warning = small_tile_warning(shape, net, (64, 64))
    assert f"tiles of 64×64 px read {planned_work(small):.1f}×" in warning
    assert f"{len(small)} tiles, each writing 16×16 px" in warning
    auto = "×".join(map(str, automatic.tile_shape))
    assert f"the automatic tile {auto} ({len(automatic)} tile(s)" in warning
    assert "fits the memory budget" in warning and "no --tile" in warning
    # The automatic tile, and a requested one that keeps most of its input, say nothing.
    assert small_tile_warning(shape, net, None) == ""
    assert small_tile_warning(shape, net, automatic.tile_shape) == ""
    assert small_tile_warning(shape, net, (128, 128)) == ""  # 2.7×
    # An image smaller than any tile: no tile reads less, so nothing to say.
    assert small_tile_warning((20, 20), net, (96, 96)) == ""


def test_the_job_carries_it_on_its_first_event(net, rng):
    image = rng.random((100, 140)).astype(np.float32)
    events = iter_predict_job(image, PredictRequest(model=net, tile=64, device="cpu"))
    first = next(events)
    events.close()
    assert "tiles of 64×64 px read" in first.warning
    quiet = iter_predict_job(image, PredictRequest(model=net, device="cpu"))
    assert next(quiet).warning == ""
    quiet.close()
    with pytest.warns(UserWarning, match="the automatic tile"):
        run_to_completion(iter_predict_job(image, PredictRequest(model=net, tile=64)))


def test_iter_with_warning_joins_and_passes_result_and_close():
    closed = []

    def events():
        try:
            yield Progress("predict", 0, 2, warning="memory")
            yield Progress("predict", 1, 2)
            yield Progress("predict", 2, 2)
            return "result"
        finally:
            closed.append(True)

    wrapped = iter_with_warning(events(), "small tile")
    assert next(wrapped).warning == "memory; small tile"
    assert next(wrapped).warning == ""
    wrapped.close()
    assert closed == [True]
    with pytest.warns(UserWarning, match="memory"):
        assert run_to_completion(iter_with_warning(events(), "")) == "result"


def test_cli_prints_one_line_for_a_small_tile_only(tmp_path, net, rng, capsys):
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, (rng.random((100, 140)) * 4000).astype(np.uint16))
    model = save_model(net, tmp_path / "m.pt")
    argv = ["predict", str(image), "--model", str(model), "--device", "cpu"]
    assert main([*argv, "-o", str(tmp_path / "a.tif"), "--tile", "64"]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "warning:" in ln]
    assert len(lines) == 1 and "tiles of 64×64 px read" in lines[0]
    assert main([*argv, "-o", str(tmp_path / "b.tif")]) == 0
    assert "warning:" not in capsys.readouterr().err
