"""Import of bioimage.io packages: an export of ours comes back as the same network, bad
packages give one clear error each. Needs the ``bioimageio`` extra (skipped without it)."""

import io
import zipfile

import numpy as np
import pytest
import torch

from _nets import tiny_unet

pytest.importorskip("bioimageio.core")

from napari_tiled_unet import Normalization, load_model, predict, save_model
from napari_tiled_unet.bioimageio import (
    PackageError,
    export_bioimageio,
    is_package,
    load_package,
)


@pytest.fixture
def exported(tmp_path):
    """A tiny instance model saved as a model file and exported as a package."""
    net = tiny_unet("same", depth=2)
    net.info = net.info.replace(
        normalization=Normalization("percentile", low=2.0, high=99.0),
        label_mode="instance",
        class_names=("background", "interior", "boundary"),
        training={"steps_done": 3, "best_scores": {"val_iou": 0.5}},
    )
    model_file = save_model(net, tmp_path / "tiny.pt")
    package = export_bioimageio(load_model(model_file), tmp_path / "tiny.zip")
    return model_file, package


def rewrite(src, dst, *, drop=(), replace=None, rdf=None):
    """A copy of the package ``src`` at ``dst`` with members dropped or replaced and its
    rdf.yaml text edited by ``rdf``."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name in drop:
                continue
            data = replace.get(name, zin.read(name))
            if name == "rdf.yaml" and rdf is not None:
                data = rdf(data.decode()).encode()
            zout.writestr(name, data)
        for name, data in replace.items():
            if name not in zin.namelist():
                zout.writestr(name, data)
    return dst


def test_a_package_of_ours_loads_as_the_same_network_and_predicts_bit_identically(exported, rng):
    model_file, package = exported
    original, imported = load_model(model_file), load_package(package)
    assert imported.config == original.config and imported.info == original.info
    assert imported.info.predicts_instances  # "auto" output is instances again
    state = original.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in imported.state_dict().items())
    image = (rng.random((90, 110)) * 3000).astype(np.uint16)
    for output in ("probabilities", "instances"):
        np.testing.assert_array_equal(
            predict(image, imported, output=output), predict(image, original, output=output)
        )


def test_command_line_predicts_with_a_package_as_with_its_model_file(exported, tmp_path, rng):
    import tifffile

    from napari_tiled_unet.cli import main

    model_file, package = exported
    image = (rng.random((70, 90)) * 3000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "image.tif", image)
    outputs = []
    for model in (model_file, package):
        out, probs = (tmp_path / f"{kind}_{model.suffix[1:]}.tif" for kind in ("labels", "p"))
        args = ["predict", str(tmp_path / "image.tif"), "--model", str(model), "--device", "cpu"]
        assert main([*args, "--output", str(out), "--probabilities", str(probs)]) == 0
        outputs.append((tifffile.imread(out), tifffile.imread(probs)))
    (labels_pt, probs_pt), (labels_zip, probs_zip) = outputs
    np.testing.assert_array_equal(labels_zip, labels_pt)
    np.testing.assert_array_equal(probs_zip, probs_pt)
    assert probs_pt.std() > 0


def test_a_folder_with_rdf_yaml_is_a_package_too(exported, tmp_path):
    _, package = exported
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(package) as z:
        z.extractall(folder)
    assert is_package(folder) and is_package(folder / "rdf.yaml") and is_package(package)
    assert not is_package(tmp_path / "tiny.pt")
    assert load_package(folder).config == load_package(folder / "rdf.yaml").config


def test_training_starts_from_an_imported_package(exported):
    from napari_tiled_unet.config import NetworkSpec
    from napari_tiled_unet.training import TrainConfig, train

    _, package = exported
    start = load_package(package)
    image = np.random.default_rng(1).normal(100, 10, (64, 64)).astype(np.float32)
    labels = np.zeros((64, 64), np.uint16)
    labels[20:40, 20:40], image[20:40, 20:40] = 1, 400
    config = TrainConfig(
        label_mode="instance",
        iterations=2,
        tile_shape=(32, 32),
        batch_size=2,
        validation_every=2,
        device="cpu",
        network=NetworkSpec(base_channels=4, depth=2),
    )
    tuned = train(image, labels, config, model=start)
    assert tuned.config == start.config
    changed = [not torch.equal(v, start.state_dict()[k]) for k, v in tuned.state_dict().items()]
    assert any(changed)


def test_bad_packages_give_one_clear_error_each(exported, tmp_path):
    _, package = exported
    missing = rewrite(package, tmp_path / "missing.zip", drop={"weights.pt"})
    with pytest.raises(PackageError, match=r"missing\.zip is damaged: it lacks weights\.pt"):
        load_package(missing)

    other = io.BytesIO()
    torch.save(tiny_unet("same", depth=2).state_dict(), other)
    tampered = rewrite(package, tmp_path / "tampered.zip", replace={"weights.pt": other.getvalue()})
    with pytest.raises(PackageError, match=r"tampered\.zip .*SHA256 mismatch"):
        load_package(tampered)

    def torchscript_only(text):
        head, rest = text.split("  pytorch_state_dict:\n", 1)
        rest = rest[rest.index("  torchscript:\n") :]
        return head + rest.replace("    parent: pytorch_state_dict\n", "")

    only = rewrite(package, tmp_path / "only.zip", rdf=torchscript_only, drop={"weights.pt"})
    with pytest.raises(
        PackageError, match=r"holds weights in torchscript; .*\.predict_foreign\(image, path\)"
    ):
        load_package(only)

    def from_file(text):
        return text.replace("import_from: napari_tiled_unet.model.unet", "source: arch.py")

    code = b"from napari_tiled_unet.model.unet import UNet\n"
    foreign = rewrite(package, tmp_path / "code.zip", rdf=from_file, replace={"arch.py": code})
    with pytest.raises(PackageError, match=r"Python source shipped in the package \(arch\.py"):
        load_package(foreign)

    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"hello")
    with pytest.raises(PackageError, match=r"not\.zip is not a readable bioimage\.io package"):
        load_package(not_zip)
