"""Foreign torchscript packages through this engine's tiler: exact, and clear errors.
Needs the ``bioimageio`` extra (skipped without it). Packages are built here; nothing is
downloaded."""

import zipfile

import numpy as np
import pytest
import torch

pytest.importorskip("bioimageio.core")

from napari_tiled_unet.bioimageio import PackageError
from napari_tiled_unet.bioimageio.foreign import open_foreign, predict_foreign

HALO = 4  # three 3-wide convolutions reach 3 px: the halo covers it


class ThreeConv(torch.nn.Module):
    """A fully convolutional 3-layer net with one output channel (logits)."""

    def __init__(self, padding=1):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=padding),
            torch.nn.ReLU(),
            torch.nn.Conv2d(4, 4, 3, padding=padding),
            torch.nn.ReLU(),
            torch.nn.Conv2d(4, 1, 3, padding=padding),
        )

    def forward(self, x):
        return self.body(x)


def build_package(tmp_path, *, valid=False, extra_axis=False, name="foreign.zip"):
    """A torchscript package: zero_mean_unit_variance in, sigmoid out; 'valid' convolutions
    declare a size offset instead of a halo."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as s

    torch.manual_seed(1)
    net = ThreeConv(padding=0 if valid else 1).eval()
    scripted = torch.jit.trace(net, torch.zeros(1, 1, 32, 32))  # convolutions only: any size
    scripted.save(str(tmp_path / "net.pt"))
    x = np.random.default_rng(0).normal(size=(1, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        y = torch.sigmoid(net(torch.from_numpy((x - x.mean()) / (x.std() + 1e-6)))).numpy()
    np.save(tmp_path / "in.npy", x[:, None] if extra_axis else x)  # (B, T, C, Y, X) then
    np.save(tmp_path / "out.npy", y)
    (tmp_path / "README.md").write_text("# foreign\n")
    space = [
        s.SpaceInputAxis(id=s.AxisId(a), size=s.ParameterizedSize(min=16, step=8)) for a in "yx"
    ]
    lead = [s.BatchAxis(), s.ChannelAxis(channel_names=["raw"])]
    if extra_axis:
        lead = [s.BatchAxis(), s.TimeInputAxis(id=s.AxisId("t"), size=1), *lead[1:]]
    out_space = []
    for a in "yx":
        if valid:
            ref = s.SizeReference(tensor_id=s.TensorId("raw"), axis_id=s.AxisId(a), offset=-6)
            out_space.append(s.SpaceOutputAxis(id=s.AxisId(a), size=ref))
        else:
            ref = s.SizeReference(tensor_id=s.TensorId("raw"), axis_id=s.AxisId(a))
            out_space.append(s.SpaceOutputAxisWithHalo(id=s.AxisId(a), size=ref, halo=HALO))
    descr = s.ModelDescr(
        name="three conv foreign",
        description="a foreign test network",
        authors=[s.Author(name="Test")],
        cite=[s.CiteEntry(text="test", doi="10.1000/xyz123")],
        license=s.LicenseId("MIT"),
        documentation=s.FileDescr(source=tmp_path / "README.md"),
        inputs=[
            s.InputTensorDescr(
                id=s.TensorId("raw"),
                axes=[*lead, *space],
                test_tensor=s.FileDescr(source=tmp_path / "in.npy"),
                preprocessing=[
                    s.ZeroMeanUnitVarianceDescr(
                        kwargs=s.ZeroMeanUnitVarianceKwargs(axes=[s.AxisId(a) for a in "yx"])
                    )
                ],
            )
        ],
        outputs=[
            s.OutputTensorDescr(
                id=s.TensorId("mask"),
                axes=[s.BatchAxis(), s.ChannelAxis(channel_names=["fg"]), *out_space],
                test_tensor=s.FileDescr(source=tmp_path / "out.npy"),
                postprocessing=[s.SigmoidDescr()],
            )
        ],
        weights=s.WeightsDescr(
            torchscript=s.TorchscriptWeightsDescr(
                source=tmp_path / "net.pt", pytorch_version=s.Version("2.0")
            )
        ),
    )
    return save_bioimageio_package(descr, output_path=tmp_path / name), net


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


ARCH_SOURCE = """
import torch


class ThreeConv(torch.nn.Module):
    def __init__(self, padding=1):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=padding),
            torch.nn.ReLU(),
            torch.nn.Conv2d(4, 4, 3, padding=padding),
            torch.nn.ReLU(),
            torch.nn.Conv2d(4, 1, 3, padding=padding),
        )

    def forward(self, x):
        return self.body(x)
"""


def test_architecture_from_package_source_needs_an_explicit_opt_in(tmp_path, rng):
    """A package whose only weights are a state dict of a network defined in a Python file
    it ships: refused, unless the caller trusts it; then it predicts as the torchscript of
    the same network does."""
    import yaml

    from napari_tiled_unet.bioimageio import load_package

    path, net = build_package(tmp_path)
    torch.save(net.state_dict(), tmp_path / "state.pt")
    (tmp_path / "arch.py").write_text(ARCH_SOURCE)
    with zipfile.ZipFile(path) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        files = {n: z.read(n) for n in z.namelist() if n not in ("rdf.yaml", "net.pt")}
    rdf["weights"] = {
        "pytorch_state_dict": {
            "source": "state.pt",
            "architecture": {"source": "arch.py", "callable": "ThreeConv", "kwargs": {}},
            "pytorch_version": "2.0",
        }
    }
    coded = tmp_path / "coded.zip"
    with zipfile.ZipFile(coded, "w") as z:
        z.writestr("rdf.yaml", yaml.safe_dump(rdf))
        for name, data in files.items():
            z.writestr(name, data)
        z.write(tmp_path / "state.pt", "state.pt")
        z.write(tmp_path / "arch.py", "arch.py")
    image = (rng.random((40, 50)) * 100).astype(np.float32)
    for refuse in (lambda: predict_foreign(image, coded), lambda: load_package(coded)):
        with pytest.raises(PackageError, match=r"Python source shipped in the package.*arch\.py"):
            refuse()
    trusted = predict_foreign(image, coded, tile_shape=(32, 32), trust_package_code=True)
    np.testing.assert_allclose(
        trusted, predict_foreign(image, path, tile_shape=(32, 32)), atol=1e-6
    )
