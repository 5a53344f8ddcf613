"""Instance separation: touching objects split by their cores or their width peaks, small
objects removed, holes filled; the same in memory, block by block and through prediction;
settings from the model."""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from _helpers import drain
from _nets import tiny_unet
from napari_tiled_unet import predict, save_model
from napari_tiled_unet.errors import UserInputError
from napari_tiled_unet.inference import iter_predict_to_file
from napari_tiled_unet.instances_blockwise import iter_instances_blockwise
from napari_tiled_unet.model.info import ModelInfo, ModelInfoError
from napari_tiled_unet.model.modelfile import load_model
from napari_tiled_unet.object_size import median_diameter, training_object_stats
from napari_tiled_unet.postprocess import instances_from_classes, labels_from_probabilities
from napari_tiled_unet.separation import InstanceOptions, RefinedClasses, refine_classes


def discs(shape, centres, radius):
    """Object ids of discs (later ones drawn over earlier ones where they overlap)."""
    yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    for k, (y, x) in enumerate(centres, 1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = k
    return labels


def merged_class_map(labels):
    """What a network gives for touching objects it cannot separate: one interior for the
    union, and a boundary ring only on the outside."""
    foreground = labels > 0
    classes = np.where(foreground, 2, 0).astype(np.uint8)
    classes[ndi.binary_erosion(foreground, iterations=2)] = 1
    return classes


def blockwise(classes, options, **kwargs):
    out = np.zeros(classes.shape, np.int32)
    sizes = dict(min_size=options.min_seed_size, min_object_size=options.min_object_size)
    view = RefinedClasses(classes, options) if options.refines else classes
    drain(iter_instances_blockwise(view, out, **sizes, **kwargs))
    return out


def in_memory(classes, options):
    probabilities = np.eye(3, dtype=np.float32)[np.minimum(classes, 2)].transpose(2, 0, 1)
    return labels_from_probabilities(probabilities, "instance", options=options)


def test_touching_discs_split_into_two_objects():
    truth = discs((60, 80), [(30, 25), (30, 52)], 14)  # centres 27 px apart: a neck
    classes = merged_class_map(truth)
    assert instances_from_classes(classes).max() == 1  # the plain rule merges them
    options = InstanceOptions.for_model(ModelInfo(axes="YX", object_diameter=28.0))
    found = in_memory(classes, options)
    assert found.max() == 2
    for k in (1, 2):  # each object is one of the discs, nearly exactly
        overlap = np.bincount(truth[found == k], minlength=3)
        assert overlap[1:].max() > 0.9 * (found == k).sum()
    np.testing.assert_array_equal(blockwise(classes, options, block=24, halo=2), found)


def test_width_peaks_split_a_cluster_whose_necks_are_too_wide_for_cores():
    """Three nuclei in a row with one joint interior, the necks wider than the cores'
    erosion cuts: one width peak per nucleus separates them."""
    truth = discs((70, 110), [(35, 25), (35, 49), (35, 73)], 15)  # necks 18 px wide
    classes = merged_class_map(truth)
    cores = InstanceOptions.for_diameter(30.0, 2)
    cores = dataclasses.replace(cores, peak_radius=0, seed_radius=0)
    assert in_memory(classes, cores).max() == 1
    options = InstanceOptions.for_diameter(30.0, 2)
    found = in_memory(classes, options)
    assert found.max() == 3
    for k in range(1, 4):  # each object is mostly one nucleus
        overlap = np.bincount(truth[found == k], minlength=4)
        assert overlap[1:].max() > 0.85 * (found == k).sum()
    np.testing.assert_array_equal(blockwise(classes, options, block=24, halo=3), found)


def test_min_object_size_is_honoured_in_memory_and_blockwise():
    truth = discs((50, 70), [(20, 18), (25, 55)], 9)
    truth[40:44, 30:34] = 3  # 16 px of noise with an interior
    classes = merged_class_map(truth)
    classes[41:43, 31:33] = 1
    plain = in_memory(classes, InstanceOptions())
    assert plain.max() == 3
    options = InstanceOptions(min_object_size=20)
    found = in_memory(classes, options)
    assert found.max() == 2 and found[41, 31] == 0
    np.testing.assert_array_equal(blockwise(classes, options, block=16), found)
    assert in_memory(classes, InstanceOptions(min_object_size=16)).max() == 3  # 16 is kept


def test_holes_filled_unless_large_or_open_to_the_border():
    classes = np.zeros((40, 60), np.uint8)
    classes[5:25, 5:25] = 1  # object with a 3 x 3 hole
    classes[13:16, 13:16] = 0
    classes[5:25, 35:60] = 1  # object with a hole open to the image border
    classes[13:16, 45:60] = 0
    classes[26:40, 5:30] = 1  # object with a 6 x 6 hole: too large
    classes[30:36, 10:16] = 0
    options = InstanceOptions(max_hole=10)
    refined = refine_classes(classes, options)
    assert (refined[13:16, 13:16] == 1).all()
    assert (refined[13:16, 45:60] == 0).all() and (refined[30:36, 10:16] == 0).all()
    found = in_memory(classes, options)
    assert found[14, 14] == found[6, 6] > 0
    np.testing.assert_array_equal(blockwise(classes, options, block=12), found)
    classes[8, 8:17] = 0  # a 9-px slit: small, but 9 px long
    long_holes = InstanceOptions(max_hole=10, hole_extent=9)
    assert (refine_classes(classes, long_holes)[8, 8:17] == 0).all()
    assert (refine_classes(classes, long_holes)[13:16, 13:16] == 1).all()
    assert (refine_classes(classes, InstanceOptions(max_hole=10))[8, 8:17] == 1).all()
    assert long_holes.halo == 9 and InstanceOptions(max_hole=10, core_radius=2).halo == 12
    assert InstanceOptions(core_radius=2, peak_radius=3, seed_radius=1).halo == 1 + 3 + 6
    np.testing.assert_array_equal(
        blockwise(classes, long_holes, block=12), in_memory(classes, long_holes)
    )


@pytest.mark.parametrize("peaks", [False, True])
@pytest.mark.parametrize("ndim", [2, 3])
def test_refined_view_equals_whole_image_refinement(rng, ndim, peaks):
    shape = (90, 110) if ndim == 2 else (20, 30, 34)
    smooth = ndi.gaussian_filter(rng.random(shape), 2)
    classes = np.digitize(smooth, np.quantile(smooth, [0.4, 0.55])).astype(np.uint8)
    classes = np.where(classes == 2, 1, np.where(classes == 1, 2, 0)).astype(np.uint8)
    options = InstanceOptions(core_radius=2, max_hole=12, hole_extent=5, min_object_size=10)
    if peaks:
        options = dataclasses.replace(options, core_radius=1, peak_radius=3, seed_radius=1)
        classes[:, :25] = 1  # wider than the distance cap: widths are capped, peaks a plateau
    whole = refine_classes(classes, options)
    view = RefinedClasses(classes, options)
    windows = [(slice(3, 17),) * ndim, (slice(0, 9), slice(5, 30)) + (slice(None),) * (ndim - 2)]
    for window in windows:
        np.testing.assert_array_equal(view[window], whole[window])
    expected = in_memory(classes, options) if ndim == 2 else None
    block = 16 if ndim == 2 else (8, 12, 12)
    result = blockwise(classes, options, block=block, halo=2)
    if expected is not None:
        np.testing.assert_array_equal(result, expected)
    sizes = dict(min_size=options.min_seed_size, min_object_size=options.min_object_size)
    np.testing.assert_array_equal(result, instances_from_classes(whole, **sizes))


def test_settings_come_from_the_model_file(tmp_path):
    assert InstanceOptions.for_model(ModelInfo()) == InstanceOptions()  # older files: plain
    assert InstanceOptions.for_model(ModelInfo(min_object_size=30)).min_object_size == 30
    options = InstanceOptions.for_model(ModelInfo(axes="YX", object_diameter=27.43))
    assert (options.core_radius, options.max_hole, options.min_object_size) == (5, 148, 89)
    assert (options.peak_radius, options.seed_radius, options.distance_cap) == (14, 3, 28)
    assert options.hole_extent == 15 and options.halo == 15 + 3 + 14 + 28
    path = save_model(
        tiny_unet(),
        tmp_path / "m.pt",
        label_mode="instance",
        object_diameter=12.5,
        min_object_size=20,
    )
    info = load_model(path).info
    assert (info.object_diameter, info.min_object_size) == (12.5, 20)
    with pytest.raises(ModelInfoError, match="object_diameter"):
        ModelInfo(object_diameter=-3)
    for name in ("core_radius", "peak_radius", "seed_radius"):
        with pytest.raises(UserInputError, match=name):
            InstanceOptions(**{name: -1})


def test_training_stats_from_labels():
    labels = discs((60, 60), [(15, 15), (45, 45)], 8)
    labels[2:4, 50:52] = 3  # a 4-px fragment
    stats = training_object_stats([labels, discs((30, 30), [(15, 15)], 8)], 2)
    assert stats["object_diameter"] == pytest.approx(2 * np.sqrt((labels == 1).sum() / np.pi), 0.01)
    assert stats["min_object_size"] == round(0.15 * (labels == 1).sum())
    assert training_object_stats([np.zeros((5, 5), int)], 2) == {}
    assert median_diameter([np.zeros((5, 5), int)]) is None


def test_trained_instance_model_stores_object_sizes():
    from napari_tiled_unet.training import TrainConfig, train

    rng = np.random.default_rng(0)
    labels = discs((64, 64), [(16, 16), (16, 46), (46, 30)], 7)
    image = (labels > 0) + rng.normal(0, 0.1, labels.shape).astype(np.float32)
    config = TrainConfig(label_mode="instance", tile_shape=(32, 32), iterations=1, device="cpu")
    info = train(image, labels, config).info
    assert info.object_diameter == pytest.approx(
        2 * np.sqrt(np.median(np.bincount(labels.ravel())[1:]) / np.pi), 0.01
    )
    assert info.min_object_size == round(0.15 * np.median(np.bincount(labels.ravel())[1:]))


@pytest.mark.parametrize("diameter_range", [None, (3.0, 40.0)])
def test_prediction_streamed_equals_in_memory_with_separation(
    tmp_path, rng, monkeypatch, diameter_range
):
    """Also when the object size is measured per image (a scale-augmented model)."""
    from napari_tiled_unet import instances_blockwise

    monkeypatch.setitem(instances_blockwise.DEFAULT_BLOCK, 2, (32, 32))
    model = save_model(
        tiny_unet(num_classes=3),
        tmp_path / "inst.pt",
        label_mode="instance",
        object_diameter=6.0,
        min_object_size=5,
        object_diameter_range=diameter_range,
    )
    image = (rng.random((96, 80)) * 4000).astype(np.uint16)
    options = dict(tile_shape=(64, 64), device="cpu")
    expected = predict(image, model, output="instances", **options)
    probabilities = predict(image, model, output="probabilities", **options)
    separated = labels_from_probabilities(
        probabilities, "instance", options=InstanceOptions.for_model(load_model(model).info)
    )
    np.testing.assert_array_equal(expected, separated)
    assert expected.max() > 3
    assert not np.array_equal(expected, labels_from_probabilities(probabilities, "instance"))
    _, result = drain(
        iter_predict_to_file(image, tmp_path / "o.zarr", model, output="instances", **options)
    )
    np.testing.assert_array_equal(result[...], expected)


def test_bundled_model_stores_the_sizes_of_its_training_objects():
    import sys
    from pathlib import Path

    from napari_tiled_unet.model.modelfile import default_model_path

    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    if not (benchmarks / "crossdomain_eval.py").exists():
        pytest.skip("benchmarks/ is not part of this installation")
    sys.path.insert(0, str(benchmarks))
    try:
        from crossdomain_eval import default_training_set
    finally:
        sys.path.remove(str(benchmarks))
    _, labels = default_training_set()
    info = load_model(default_model_path()).info
    expected = training_object_stats(labels, 2, scale=2.0)  # the recipe's 0.5-2x
    assert (info.object_diameter, info.min_object_size, info.object_diameter_range) == (
        expected["object_diameter"],
        expected["min_object_size"],
        tuple(expected["object_diameter_range"]),
    )
