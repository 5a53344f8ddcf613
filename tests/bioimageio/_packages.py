"""Small foreign bioimage.io packages, built by the tests (nothing is downloaded)."""

import inspect
import zipfile

import numpy as np
import torch

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


#: The package's own architecture file: ThreeConv's source, which the package ships.
ARCH_SOURCE = "import torch\n\n\n" + inspect.getsource(ThreeConv)


def build_coded_package(tmp_path, path, net):
    """The package at ``path`` with its torchscript weights replaced by a state dict of
    ``net`` whose architecture is Python source shipped in the package (``arch.py``)."""
    import yaml

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
    return coded
