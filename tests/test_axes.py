"""Axis layouts: parsing, inference, lazy frame views, and prediction over iterated axes."""

import numpy as np
import pytest
import zarr

from _helpers import drain
from _nets import tiny_unet
from napari_tiled_unet import iter_predict, predict, save_model
from napari_tiled_unet.axes import (
    AxesError,
    ModelSpec,
    axes_from_layer,
    axes_from_tiff,
    choose_layout,
    infer_axes,
    parse_axes,
    plan_layout,
)
from napari_tiled_unet.inference import forward_whole_image, iter_predict_to_file
from napari_tiled_unet.model.modelfile import load_model
from napari_tiled_unet.normalization import Normalization

# ----------------------------------------------------------------------------------------------
# Layout strings


def test_user_strings_are_checked():
    assert parse_axes("tzcyx", 5) == "TZCYX"
    for axes, ndim, problem in [
        ("TZYX", 3, "4 letters for an image of 3 axes"),
        ("ZZYX", 4, "Z given more than once"),
        ("ZCY", 3, "Y and X are required"),
        ("QYX", 3, "unknown letter"),
    ]:
        with pytest.raises(AxesError, match=problem) as err:
            parse_axes(axes, ndim)
        assert "T (time), Z (depth), C (channel), Y (height) and X (width)" in str(err.value)


def test_metadata_hints():
    assert axes_from_tiff("YXS") == "YXC"  # RGB samples are channels
    assert axes_from_tiff("SYX") == "CYX"
    assert axes_from_tiff("QYX") == "?YX" and axes_from_tiff("IYX") == "?YX"
    assert axes_from_tiff("TZCYX") == "TZCYX"
    assert axes_from_layer(3, ("-3", "-2", "-1")) == "???"  # napari's default labels
    assert axes_from_layer(3, ("t", "y", "x")) == "TYX"
    assert axes_from_layer(3, ("-2", "-1"), rgb=True) == "??C"


@pytest.mark.parametrize(
    ("shape", "model", "kwargs", "expected"),
    [
        ((3, 512, 512), (3, 2), {}, "CYX"),
        ((3, 512, 512), (1, 3), {}, "ZYX"),
        ((3, 512, 512), (1, 2), {}, "ZYX"),  # ZYX or TYX: the same plane-by-plane prediction
        ((512, 512, 3), (3, 2), {}, "YXC"),  # a last axis of 3 is colour, as napari guesses
        ((5, 3, 64, 64), (1, 2), {}, "TZYX"),
        ((5, 3, 64, 64), (3, 2), {}, "ZCYX"),
        ((2, 3, 40, 50), (3, 2), {"tiff_axes": "QSYX"}, "ZCYX"),
        ((3, 40, 50), (3, 2), {"tiff_axes": "SYX"}, "CYX"),
        ((40, 50, 3), (3, 2), {"rgb": True, "axis_labels": ("-2", "-1")}, "YXC"),
        ((4, 40, 50), (1, 2), {"axis_labels": ("time", "y", "x"), "rgb": False}, "TYX"),
        ((5, 64, 64), (None, 2), {"labels_shape": (5, 64, 64)}, "ZYX"),  # training a stack
        ((2, 64, 64), (None, 2), {"labels_shape": (64, 64)}, "CYX"),
    ],
)
def test_inferred_layouts(shape, model, kwargs, expected):
    assert infer_axes(shape, model=ModelSpec(*model), **kwargs) == expected


def test_ambiguous_layout_lists_every_reading():
    with pytest.raises(AxesError, match="ambiguous") as err:
        infer_axes((3, 3, 64, 64), model=ModelSpec(3, 2), name="input a.tif")
    message = str(err.value)
    assert message.startswith("input a.tif has shape (3, 3, 64, 64)")
    for reading in ("ZCYX", "TCYX", "CZYX", "CTYX", "TZYX"):
        assert f"{reading}:" in message
    assert "--axes" in message and "axes='...'" in message
    assert {a for a, problem in err.value.readings if problem is None} == {
        "ZCYX",
        "TCYX",
        "CZYX",
        "CTYX",
    }
    with pytest.raises(AxesError, match="ambiguous"):
        infer_axes((3, 64, 64))  # no model: C, Z and T all possible


def test_layout_the_model_cannot_take_names_axes_shape_and_expectation():
    net = tiny_unet("same", depth=2, in_channels=3)
    image = np.zeros((2, 32, 32), np.float32)
    with pytest.raises(ValueError, match=r"shape \(2, 32, 32\) and axes CYX") as err:
        predict(image, net, axes="cyx")
    assert "expects a 2D image with 3 channels, axes CYX" in str(err.value)
    assert "2 channels, the model takes 3" in str(err.value)
    with pytest.raises(ValueError, match=r"Readings considered: ZYX: no C axis.*CYX: 2 channels"):
        predict(image, net)
    with pytest.raises(ValueError, match=r"channels \[0, 5\] selected but the C axis has 3"):
        predict(np.zeros((3, 32, 32), np.float32), tiny_unet(), channels=[0, 5])
    with pytest.raises(ValueError, match=r"RGB colour\), the model takes 1 \(select one with"):
        predict(np.zeros((32, 32, 3), np.uint8), tiny_unet())
    with pytest.raises(ValueError, match="no Z axis for a 3D model"):
        plan_layout((4, 32, 32), "TYX", ModelSpec(1, 3))


# ----------------------------------------------------------------------------------------------
# Lazy views


class Recorder:
    """An array-like that records the keys it is read with."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.keys = array, array.shape, array.dtype, []

    def __getitem__(self, key):
        self.keys.append(key)
        return self.array[key]


@pytest.mark.parametrize(
    ("axes", "shape", "spec", "channels"),
    [
        ("ZCYX", (3, 2, 6, 7), (2, 2), None),
        ("TZYX", (2, 3, 6, 7), (1, 3), None),
        ("YXC", (6, 7, 3), (3, 2), None),
        ("CYX", (4, 6, 7), (2, 2), [3, 1]),
        ("TZCYX", (2, 3, 4, 6, 7), (1, 2), [2]),
    ],
)
def test_frames_round_trip(axes, shape, spec, channels, rng):
    image = rng.random(shape)
    layout = plan_layout(shape, axes, ModelSpec(*spec), channels=channels)
    c = axes.find("C")
    # The reference, by name: iterated axes (image order), C, then the model's spatial axes.
    spatial = "ZYX"[-layout.ndim :]
    looped = [a for a in axes if a not in spatial + "C"]
    order = looped + (["C"] if c >= 0 else []) + list(spatial)
    canonical = np.transpose(image, [axes.index(a) for a in order])
    if c < 0:
        canonical = np.expand_dims(canonical, len(looped))
    elif channels is not None:
        canonical = np.take(canonical, channels, axis=len(looped))
    frames = list(layout.frames())
    assert len(frames) == layout.n_frames == int(np.prod(canonical.shape[: len(looped)]))
    recorder = Recorder(image)
    out = np.zeros(layout.output_shape)
    expected_frames = canonical.reshape(-1, *canonical.shape[len(looped) :])
    for index, expected in zip(frames, expected_frames, strict=True):
        view = layout.frame(recorder, index)
        assert view.shape == expected.shape and not recorder.keys  # nothing read yet
        np.testing.assert_array_equal(view[...], expected)
        window = (slice(None), *(slice(2, 5),) * layout.ndim)
        np.testing.assert_array_equal(view[window], expected[window])
        assert sum(k == slice(2, 5) for k in recorder.keys[-1]) == layout.ndim  # a window only
        recorder.keys.clear()
        layout.frame_out(out, index)[...] = expected.sum(axis=0)
    # Written back in the image's own order: the image summed over its selected channels.
    reference = image if c < 0 else np.take(image, channels or range(shape[c]), axis=c).sum(c)
    np.testing.assert_allclose(out, reference)
    assert layout.output_axes == axes.replace("C", "")


def test_views_read_windows_of_zarr_and_write_zarr(rng):
    image = zarr.create_array(store={}, shape=(2, 30, 40, 3), dtype=np.uint8, chunks=(1, 8, 8, 3))
    image[...] = (rng.random(image.shape) * 255).astype(np.uint8)
    layout = choose_layout(image.shape, ModelSpec(3, 2), axes="TYXC")
    frame = layout.frame(image, (1,))
    np.testing.assert_array_equal(frame[:, 5:9, 2:3], np.moveaxis(image[1, 5:9, 2:3], -1, 0))
    out = zarr.create_array(store={}, shape=(4, 2, 30, 40), dtype=np.float32, chunks=(1, 1, 8, 8))
    part = layout.frame_out(out, (1,), lead=1)
    assert part.shape == (4, 30, 40) and part.chunks == (1, 8, 8)
    part[:, 0:2, 0:3] = np.ones((4, 2, 3))
    assert out[:, 1].sum() == 24 and out[:, 0].sum() == 0


# ----------------------------------------------------------------------------------------------
# Prediction over iterated axes


def test_time_series_equals_per_frame_predictions_with_one_progress_stream(rng, tmp_path):
    net = tiny_unet("same", depth=2)
    path = save_model(
        net, tmp_path / "m.pt", normalization={"mode": "fixed", "offset": 0.5, "scale": 2.0}
    )
    movie = rng.random((3, 40, 48), dtype=np.float32)
    events, _ = drain(iter_predict(movie, path, axes="TYX", output="probabilities"))
    per_frame = np.stack([predict(m, path, output="probabilities") for m in movie], axis=1)
    result = predict(movie, path, axes="TYX", output="probabilities")
    assert result.shape == (3, 3, 40, 48) and np.array_equal(result, per_frame)
    assert [e.done for e in events] == [0, 1, 2, 3] and {e.total for e in events} == {3}
    # Without axes a stack is read as Z planes for a 2D model: the same numbers.
    np.testing.assert_array_equal(predict(movie, path), per_frame.argmax(0))


def test_rgb_and_channel_selection_match_channels_first_predictions(rng):
    net = tiny_unet("same", depth=2, in_channels=3)
    rgb = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    planar = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    expected = predict(planar, net, output="probabilities")
    np.testing.assert_array_equal(predict(rgb, net, output="probabilities"), expected)
    np.testing.assert_array_equal(predict(rgb, net, axes="YXC", output="probabilities"), expected)
    two = tiny_unet("same", depth=2, in_channels=2)
    hyper = rng.random((2, 2, 3, 32, 32), dtype=np.float32)  # T, Z, C, Y, X
    result = predict(hyper, two, axes="TZCYX", channels=[2, 0])
    assert result.shape == (2, 2, 32, 32)
    for t, z in np.ndindex(2, 2):
        np.testing.assert_array_equal(result[t, z], predict(hyper[t, z, [2, 0]], two))


def test_instances_are_labelled_frame_by_frame_in_memory_and_streamed(rng, tmp_path):
    net = tiny_unet("same", depth=2, num_classes=3)
    movie = rng.random((2, 40, 48), dtype=np.float32)
    expected = np.stack([predict(m, net, output="instances") for m in movie])
    np.testing.assert_array_equal(predict(movie, net, axes="TYX", output="instances"), expected)
    generator = iter_predict_to_file(
        movie, tmp_path / "o.zarr", net, axes="tyx", output="instances"
    )
    events, written = drain(generator)
    np.testing.assert_array_equal(written[...], expected)
    assert dict(zarr.open_array(str(tmp_path / "o.zarr")).attrs)["axes"] == "TYX"
    blocks = [e for e in events if e.stage == "instances"]
    assert blocks[-1].done == blocks[-1].total and len({e.total for e in blocks}) == 1
    assert [e.done for e in blocks] == sorted(e.done for e in blocks)


# ----------------------------------------------------------------------------------------------
# Per-channel normalisation


def test_percentiles_are_resolved_per_channel(rng):
    image = np.stack([rng.random((50, 60)) * 10, rng.random((50, 60)) * 1000 + 500])
    per = Normalization().resolve(image, channel_axis=0)
    assert per.mode == "fixed" and len(per.offset) == 2 and per.offset[1] > 400
    joint = Normalization(per_channel=False).resolve(image, channel_axis=0)
    assert isinstance(joint.offset, float)
    assert Normalization().resolve(image) == joint  # no channel axis named: one for all
    normalised = per.apply(image[None], channel_axis=1)[0]
    assert np.percentile(normalised[0], 99.8) == pytest.approx(1, abs=1e-5)
    assert np.percentile(normalised[1], 1) == pytest.approx(0, abs=1e-5)
    with pytest.raises(ValueError, match="needs channel_axis"):
        per.apply(image)


def test_per_channel_normalisation_is_stored_and_reused(rng, tmp_path):
    net = tiny_unet("same", depth=2, in_channels=2)
    image = np.stack([rng.random((40, 48)) * 10, rng.random((40, 48)) * 1000]).astype(np.float32)
    fixed = Normalization(mode="fixed", offset=[1.0, 100.0], scale=[10.0, 1000.0])
    path = save_model(net, tmp_path / "fixed.pt", normalization=fixed.to_dict())
    assert Normalization.from_dict(load_model(path).metadata["normalization"]) == fixed
    by_hand = (image - np.array([1, 100], np.float32)[:, None, None]) / np.array(
        [10, 1000], np.float32
    )[:, None, None]
    np.testing.assert_allclose(
        predict(image, path, output="probabilities"), forward_whole_image(by_hand, net), atol=1e-5
    )
    path = save_model(net, tmp_path / "pct.pt", normalization=Normalization().to_dict())
    resolved = Normalization().resolve(image, channel_axis=0)
    np.testing.assert_allclose(
        predict(image, path, output="probabilities"),
        forward_whole_image(resolved.apply(image, channel_axis=0), net),
        atol=1e-5,
    )


def test_old_scalar_normalisation_files_load_and_normalise_as_before(rng, tmp_path):
    net = tiny_unet("same", depth=2, in_channels=2)
    image = np.stack([rng.random((40, 48)) * 10, rng.random((40, 48)) * 1000]).astype(np.float32)
    old = {"mode": "percentile", "low": 1.0, "high": 99.8, "offset": 0.0, "scale": 1.0}
    path = save_model(net, tmp_path / "old.pt", normalization=old)
    stored = Normalization.from_dict(load_model(path).metadata["normalization"])
    assert stored.per_channel is False
    lo, hi = np.percentile(image, [1.0, 99.8])  # both channels together, as before
    np.testing.assert_allclose(
        predict(image, path, output="probabilities"),
        forward_whole_image((image - np.float32(lo)) / np.float32(hi - lo), net),
        atol=1e-5,
    )


# ----------------------------------------------------------------------------------------------
# A model's stored channel selection

#: A 2-channel model trained on channels [2, 0] of 3-channel images.
SELECTED = ModelSpec(2, 2, channels=[2, 0], source_channels=3)


def test_stored_selection_reads_images_of_the_training_channel_count():
    layout = choose_layout((3, 32, 40), SELECTED)
    assert (layout.axes, layout.channels) == ("CYX", (2, 0))
    assert layout.describe() == "CYX: 3 channel(s), YX planes, channels [2, 0] (from the model)"
    assert choose_layout((32, 40, 3), SELECTED).channels == (2, 0)  # YXC, as for RGB
    assert choose_layout((5, 3, 32, 40), SELECTED).axes == "ZCYX"  # not ambiguous
    assert infer_axes((3, 32, 40), model=SELECTED) == "CYX"
    assert plan_layout((3, 32, 40), "CYX", SELECTED) == choose_layout((3, 32, 40), SELECTED)
    # Already selected: read as it is, as before.
    assert choose_layout((2, 32, 40), SELECTED).channels is None
    # An explicit selection always wins, and is not called the model's.
    explicit = choose_layout((3, 32, 40), SELECTED, channels=[0, 1])
    assert explicit.channels == (0, 1) and "from the model" not in explicit.describe()
    # A one-channel model trained on channel 1 of RGB-like images: (3, Y, X) is its layout.
    one = ModelSpec(1, 2, channels=[1], source_channels=3)
    assert choose_layout((3, 32, 40), one).channels == (1,)
    assert choose_layout((5, 32, 40), one).axes == "ZYX"  # other stacks as before
    assert choose_layout((32, 40), one).axes == "YX"


def test_stored_selection_mismatch_names_it_and_how_to_override():
    with pytest.raises(AxesError) as info:
        choose_layout((4, 32, 40), SELECTED)
    message = str(info.value)
    assert "4 channels, the model takes 2" in message
    assert "trained on channels [2, 0] of 3-channel images" in message
    assert "channels=[...]" in message and "--channels" in message
    assert "channels field of the Predict widget" in message
    with pytest.raises(AxesError, match=r"trained on channels \[2, 0\] of 3-channel images"):
        plan_layout((4, 32, 40), "CYX", SELECTED)
    # Without a known source channel count the selection is only reported, never applied.
    unknown = ModelSpec(2, 2, channels=[2, 0])
    with pytest.raises(AxesError, match="does not apply that selection by itself"):
        choose_layout((3, 32, 40), unknown)


def test_model_spec_reads_the_selection_from_model_metadata():
    net = tiny_unet("same", depth=2, in_channels=2)
    assert ModelSpec.of(net) == ModelSpec(2, 2)  # old files: no selection
    net.info = net.info.replace(channels=[2, 0], source_channels=3)
    assert ModelSpec.of(net) == SELECTED
    assert ModelSpec.of(net.config) == ModelSpec(2, 2)  # a config has no metadata
    for channels, source, problem in [
        ([2], 3, "has 1 channel"),
        ([2, 3], 3, "does not fit images of 3"),
        (None, 3, "without a channel selection"),
        (["a", 0], 3, "must be channel numbers"),
    ]:
        with pytest.raises(ValueError, match=problem):
            net.info = net.info.replace(channels=channels, source_channels=source)
        with pytest.raises(ValueError, match=problem):
            ModelSpec(2, 2, channels, source)


def test_stored_selection_predictions_equal_explicit_ones(rng):
    net = tiny_unet("same", depth=2, in_channels=2)
    net.info = net.info.replace(channels=[2, 0], source_channels=3)
    hyper = rng.random((4, 3, 32, 32), dtype=np.float32)  # Z, C, Y, X
    expected = predict(hyper, net, axes="ZCYX", channels=[2, 0], output="probabilities")
    np.testing.assert_array_equal(predict(hyper, net, output="probabilities"), expected)
    np.testing.assert_array_equal(
        predict(np.ascontiguousarray(hyper[:, [2, 0]]), net, output="probabilities"), expected
    )
    instances = predict(hyper[0], net, output="instances")
    np.testing.assert_array_equal(instances, predict(hyper[0, [2, 0]], net, output="instances"))
