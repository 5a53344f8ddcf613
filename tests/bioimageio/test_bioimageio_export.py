"""Export to bioimage.io: the package passes bioimage.io core's own test, and core's blockwise
prediction of it equals ours. Needs the ``bioimageio`` extra (skipped without it)."""

import zipfile

import numpy as np
import pytest

from _nets import tiny_unet

pytest.importorskip("bioimageio.core")

from napari_tiled_unet import Normalization, load_model, predict
from napari_tiled_unet.bioimageio import default_export_metadata, export_bioimageio
from napari_tiled_unet.errors import UserInputError


def bioimageio_test(path):
    """bioimage.io core's ``test_model`` (what ``bioimageio test PATH`` runs), offline: the
    failures' messages, [] when it passes."""
    from bioimageio.core import test_model

    summary = test_model(str(path))
    failed = [f"{d.name}: {[e.msg[:300] for e in d.errors]}" for d in summary.details]
    failed = [f for d, f in zip(summary.details, failed, strict=True) if d.status != "passed"]
    assert (summary.status == "passed") == (not failed), summary.status
    return failed


def core_blockwise(path, image, blocksize_parameter):
    """Class probabilities ``(K, Y, X)`` from bioimage.io core's blockwise prediction."""
    from bioimageio.core import Sample, Tensor
    from bioimageio.core import predict as core_predict

    dims = ("batch", "channel", "y", "x")
    tensor = Tensor(image[None, None].astype(np.float32), dims=dims)
    sample = Sample(members={"input": tensor}, stat={}, id="sample")
    out = core_predict(model=str(path), inputs=sample, blocksize_parameter=blocksize_parameter)
    return out.members["probabilities"].data.values[0]


@pytest.mark.slow
def test_bundled_model_export_passes_bioimageio_test_and_core_predicts_what_we_predict(tmp_path):
    """The README's "same numbers everywhere": the exported halo is the tiler's context (112 px,
    a whole number of grid steps), so core's blocks sit on the same pooling phase as our tiles.
    Core places its last block flush with the image end (start = size - inner size), which is
    on the grid only when the size is a multiple of it: the sample (608 x 1020) is cut to
    608 x 1008 for that reason."""
    import tifffile

    from napari_tiled_unet.model.modelfile import default_model_path

    sample = default_model_path().parent / "nuclei.tif"
    image = tifffile.imread(sample)
    model = load_model(default_model_path())
    path = export_bioimageio(model, tmp_path / "nuclei.zip", sample_image=image)
    assert bioimageio_test(path) == []

    image = image[:, :1008]
    ours = predict(image, model, output="probabilities")
    theirs = core_blockwise(path, image, blocksize_parameter=22)  # 592 px blocks: 2 x 3 of them
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(theirs.argmax(axis=0), ours.argmax(axis=0))


def _trained_2d(tmp_path):
    """A tiny model trained for a few steps on discs (instance labels, percentile input)."""
    from napari_tiled_unet.config import NetworkSpec
    from napari_tiled_unet.training import TrainConfig, train

    rng = np.random.default_rng(0)
    image = rng.normal(200, 20, (96, 96)).astype(np.float32)
    labels = np.zeros((96, 96), np.uint16)
    yy, xx = np.mgrid[:96, :96]
    for i, (cy, cx) in enumerate([(20, 20), (20, 70), (60, 40), (75, 80)], start=1):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 64
        labels[disc], image[disc] = i, image[disc] + 600
    config = TrainConfig(
        label_mode="instance",
        iterations=4,
        tile_shape=(32, 32),
        batch_size=2,
        validation_every=2,
        device="cpu",
        network=NetworkSpec(base_channels=4, depth=2),
    )
    return train(image, labels, config), image


def _cases(tmp_path):
    three_d = tiny_unet("same", depth=2, ndim=3, anisotropic_levels=1, num_classes=2)
    three_d.info = three_d.info.replace(normalization=Normalization("percentile"))
    multichannel = tiny_unet("same", depth=2, in_channels=2)
    multichannel.info = multichannel.info.replace(
        normalization=Normalization("fixed", offset=(10.0, 100.0), scale=(50.0, 400.0)),
        class_names=("background", "cell", "edge"),
    )
    valid = tiny_unet("valid", depth=2)
    return {"3d-anisotropic": three_d, "multichannel": multichannel, "valid": valid}


@pytest.mark.parametrize("case", ["trained-2d", "3d-anisotropic", "multichannel", "valid"])
def test_export_of_small_networks_passes_bioimageio_test(tmp_path, case):
    if case == "trained-2d":
        model, image = _trained_2d(tmp_path)
    else:
        model, image = _cases(tmp_path)[case], None
    path = export_bioimageio(model, tmp_path / f"{case}.zip", sample_image=image)
    assert bioimageio_test(path) == []
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        rdf = z.read("rdf.yaml").decode()
    assert {"weights.pt", "weights_torchscript.pt", "cover.png", "README.md"} <= names
    assert "mode: reflect" in rdf and "import_from: napari_tiled_unet.model.unet" in rdf
    if case == "trained-2d":
        assert "label_mode: instance" in rdf and "best_scores" in rdf


def test_exported_halo_and_sizes_follow_the_geometry(tmp_path):
    from bioimageio.spec import load_model_description

    net = tiny_unet("same", depth=2, ndim=3, anisotropic_levels=1, num_classes=2)
    descr = load_model_description(export_bioimageio(net, tmp_path / "a.zip"))
    sizes = {str(a.id): (a.size.min, a.size.step) for a in descr.inputs[0].axes[2:]}
    halos = {str(a.id): a.halo for a in descr.outputs[0].axes[2:]}
    assert net.geometry.grids == (2, 4, 4)
    assert halos == {"z": 14, "y": 24, "x": 24}  # fields 13 and 23, rounded up to the grid
    assert sizes == {"z": (30, 2), "y": (52, 4), "x": (52, 4)}  # 2 * halo + grid
    assert descr.inputs[0].pad.mode == "reflect"
    assert descr.inputs[0].preprocessing[-1].kwargs.dtype == "float32"


def test_default_metadata_and_bad_arguments(tmp_path):
    net = tiny_unet()
    meta = default_export_metadata(net)
    assert {"name", "description", "authors", "license", "cite"} <= set(meta)
    assert any("doi" in c for c in meta["cite"]) and meta["license"] == "CC-BY-4.0"
    with pytest.raises(UserInputError, match=r"a \.zip file"):
        export_bioimageio(net, tmp_path / "model.pt")
    with pytest.raises(UserInputError, match="an author is a name"):
        export_bioimageio(net, tmp_path / "a.zip", authors=[{"affiliation": "x"}])
    with pytest.raises(UserInputError, match="does not validate"):
        export_bioimageio(net, tmp_path / "a.zip", license="not a licence")
    with pytest.raises(UserInputError, match=r"sample_image must be \(C, Y, X\) with C = 1"):
        export_bioimageio(net, tmp_path / "a.zip", sample_image=np.zeros((3, 64, 64)))
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_command_line_export(tmp_path, capsys):
    from bioimageio.spec import load_model_description

    from napari_tiled_unet import save_model
    from napari_tiled_unet.cli import main

    model = save_model(tiny_unet(), tmp_path / "tiny.pt")
    out = tmp_path / "tiny.zip"
    argv = [
        "export",
        str(model),
        "--output",
        str(out),
        "--name",
        "Tiny net",
        "--author",
        "A. Person",
    ]
    assert main([*argv, "--cite", "A paper|10.1000/xyz123", "--license", "MIT"]) == 0
    assert f"bioimageio test {out}" in capsys.readouterr().out
    descr = load_model_description(out)
    assert descr.name == "Tiny net" and [a.name for a in descr.authors] == ["A. Person"]
    assert str(descr.license) == "MIT" and str(descr.cite[-1].doi) == "10.1000/xyz123"
    assert len(descr.cite) == 3  # the U-Net paper and this package stay cited
    assert main(["export", str(model), "--output", str(model)]) == 1
    assert "the model file itself" in capsys.readouterr().err
    assert main([*argv[:4], "--cite", "no reference"]) == 1
    assert "--cite wants 'TEXT|DOI_OR_URL'" in capsys.readouterr().err
    assert main([*argv[:4], "--name", "abc"]) == 1
    assert "does not validate: name: Value should have at least 5" in capsys.readouterr().err
