import pytest
import torch

from napari_tiled_unet import UNet
from napari_tiled_unet.config import UNetConfig
from napari_tiled_unet.model.geometry import UNetGeometry


def test_paper_sizes():
    geometry = UNetGeometry.from_config(UNetConfig(padding="valid", depth=4))
    assert geometry.output_size(572) == 388
    assert geometry.halo == (92, 92)
    assert geometry.output_size(500) is None
    assert geometry.nearest_valid_sizes(500) == (492, 508)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_valid_output_size_matches_network(depth):
    net = UNet(1, 2, depth=depth, base_channels=2, padding="valid")
    geometry = net.geometry
    for size in range(geometry.min_input_size, geometry.min_input_size + 3 * 2**depth):
        out = geometry.output_size(size)
        if out is None:
            with pytest.raises(ValueError, match="use"):
                net(torch.zeros(1, 1, size, size))
        else:
            assert net(torch.zeros(1, 1, size, size)).shape[-2:] == (out, out)


def test_same_padding_sizes_and_error_names_alternatives():
    net = UNet(1, 2, depth=3, base_channels=2)
    assert net(torch.zeros(1, 1, 24, 40)).shape == (1, 2, 24, 40)
    with pytest.raises(ValueError, match=r"axis X .* use 32 or 40"):
        net(torch.zeros(1, 1, 24, 33))


def test_seed_architecture():
    net = UNet(1, 2)
    assert len(net.downs) == 4 and len(net.ups) == 4
    assert net.downs[0].conv.conv_block[0].out_channels == 64
    assert net.bottleneck.conv_block[0].out_channels == 1024
    assert net.ups[0].up.out_channels == 512  # transposed conv halves the channels
    assert net.out.kernel_size == (1, 1)


def test_same_padding_halo_covers_receptive_field():
    """The receptive field is exact (a pixel perturbation further away has no effect) and the
    halo is it rounded up to the pooling grid."""
    torch.manual_seed(0)
    net = UNet(1, 2, depth=2, base_channels=4).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()  # no dead ReLUs
    for down in net.downs:  # same window as max pooling, but every input of it shows
        down.pool = torch.nn.AvgPool2d(2)
    before, after = net.geometry.axes[0].receptive_field
    grid = net.geometry.grid
    assert net.geometry.halo == (-(-max(before, after) // grid) * grid,) * 2
    size = 160
    x = torch.rand(1, 1, 1, size, dtype=torch.float64).expand(1, 1, 8, size).clone()
    base = net(x)
    reach_before = reach_after = 0
    for j in range(60, 100):  # far from the borders, over all grid phases
        y = x.clone()
        y[..., j] += 1.0
        affected = torch.nonzero((net(y) - base).abs().amax(dim=(0, 1, 2)) > 0).flatten()
        # output i depends on input j for i - before <= j <= i + after
        reach_after = max(reach_after, j - int(affected.min()))
        reach_before = max(reach_before, int(affected.max()) - j)
    assert reach_after <= after and reach_before <= before
    assert (reach_before, reach_after) == (before, after)


def test_config_validation():
    with pytest.raises(ValueError, match="padding"):
        UNetConfig(padding="reflect")
    with pytest.raises(ValueError, match="num_classes"):
        UNetConfig(num_classes=1)
    assert UNetConfig.from_dict(UNetConfig(depth=3).to_dict()) == UNetConfig(depth=3)
