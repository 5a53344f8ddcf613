"""Foreign torchscript packages through this engine's tiler: exact, and clear errors.
Needs the ``bioimageio`` extra (skipped without it). Packages are built by _packages.py; nothing is
downloaded."""

import numpy as np
import pytest
import torch

pytest.importorskip("bioimageio.core")

from _packages import HALO, build_coded_package, build_package

from napari_tiled_unet.bioimageio import PackageError
from napari_tiled_unet.bioimageio.foreign import open_foreign, predict_foreign


@pytest.mark.parametrize("valid", [False, True])
def test_foreign_torchscript_package_is_tiled_exactly(tmp_path, valid, rng):
    path, net = build_package(tmp_path, valid=valid)
    package = open_foreign(path)
    image = (rng.random((70, 93)) * 1000).astype(np.float32)
    tiled = predict_foreign(image, package, tile_shape=(32, 32))
    # The reference: one forward pass over the whole normalised image, mirror-padded by the
    # context (and after it up to an accepted size), sigmoid, cropped.
    x = (image - image.mean()) / (image.std() + 1e-6)
    context = 3 if valid else HALO
    sizes = [next(m for m in range(16, 10**4, 8) if m >= n + 2 * context) for n in image.shape]
    pads = [(context, m - n - context) for n, m in zip(image.shape, sizes, strict=True)]
    padded = np.pad(x, pads, mode="reflect")
    with torch.no_grad():
        y = torch.sigmoid(net(torch.from_numpy(padded[None, None].astype(np.float32))))
    first = 0 if valid else context
    reference = y.numpy()[0][:, first : first + 70, first : first + 93]
    assert len(package.geometry) == 2 and package.padded is not valid
    np.testing.assert_allclose(tiled, reference, atol=1e-5, rtol=0)
    labels = predict_foreign(image, package, output="labels", tile_shape=(32, 32))
    np.testing.assert_array_equal(labels, (reference[0] > 0.5).astype(np.uint16))
    assert 0 < labels.mean() < 1  # both classes present: the threshold was exercised


def test_foreign_package_errors(tmp_path, rng):
    path, _ = build_package(tmp_path, valid=True)
    with pytest.raises(ValueError, match=r"smaller than the 16 px this 'valid' package"):
        predict_foreign(rng.random((12, 40)).astype(np.float32), path)
    with pytest.raises(ValueError, match=r"expects \(1 channels, y, x\)"):
        predict_foreign(rng.random((2, 40, 40)).astype(np.float32), path)
    (tmp_path / "odd").mkdir()
    odd, _ = build_package(tmp_path / "odd", extra_axis=True, name="time.zip")
    with pytest.raises(PackageError, match=r"input axes .* cannot be mapped"):
        open_foreign(odd)


def test_architecture_from_package_source_needs_an_explicit_opt_in(tmp_path, rng):
    """A package whose only weights are a state dict of a network defined in a Python file
    it ships: refused, unless the caller trusts it; then it predicts as the torchscript of
    the same network does."""
    from napari_tiled_unet.bioimageio import load_package

    path, net = build_package(tmp_path)
    coded = build_coded_package(tmp_path, path, net)
    image = (rng.random((40, 50)) * 100).astype(np.float32)
    for refuse in (lambda: predict_foreign(image, coded), lambda: load_package(coded)):
        with pytest.raises(PackageError, match=r"Python source shipped in the package.*arch\.py"):
            refuse()
    trusted = predict_foreign(image, coded, tile_shape=(32, 32), trust_package_code=True)
    np.testing.assert_allclose(
        trusted, predict_foreign(image, path, tile_shape=(32, 32)), atol=1e-6
    )
