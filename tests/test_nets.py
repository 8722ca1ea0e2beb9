"""Paper networks: exact key sets, filter and parameter counts, shapes at every scale."""

import pytest
import torch
from torch import nn

from faig_lightning.nets import MSRResNet, SRCNNStyle


def _filters(net: nn.Module) -> int:
    return sum(m.weight.shape[0] * m.weight.shape[1] for m in net.modules() if isinstance(m, nn.Conv2d))


def test_srcnn_style_matches_paper():
    net = SRCNNStyle(scale=2)
    expected = [f"features.{i}.{p}" for i in (0, 2, 4, 6, 8, 10, 12, 15, 17) for p in ("weight", "bias")]
    assert list(net.state_dict()) == expected
    assert _filters(net) == 156_224
    # cumulative filter counts of the official mask_neurons.py (digest §3.1)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    cumulative = torch.tensor([c.weight.shape[0] * c.weight.shape[1] for c in convs]).cumsum(0).tolist()
    assert cumulative == [192, 8384, 24768, 41152, 57536, 73920, 139456, 155840, 156224]


def test_msrresnet_matches_basicsr():
    net = MSRResNet(scale=2, num_feat=64, num_block=16)
    keys = list(net.state_dict())
    body = [f"body.{b}.{c}.{p}" for b in range(16) for c in ("conv1", "conv2") for p in ("weight", "bias")]
    head = ["conv_first.weight", "conv_first.bias"]
    tail = [f"{n}.{p}" for n in ("upconv1", "conv_hr", "conv_last") for p in ("weight", "bias")]
    assert keys == head + body + tail
    assert _filters(net) == 151_936
    assert sum(p.numel() for p in net.parameters()) == 1_369_859
    assert {"upconv1.weight", "upconv2.weight"} <= set(MSRResNet(scale=4).state_dict())


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("cls", [SRCNNStyle, MSRResNet])
def test_output_shape(cls, scale):
    net = cls(scale=scale) if cls is SRCNNStyle else cls(scale=scale, num_feat=8, num_block=1)
    assert net(torch.rand(2, 3, 7, 9)).shape == (2, 3, 7 * scale, 9 * scale)


def test_msrresnet_global_residual_is_bilinear():
    net = MSRResNet(scale=2, num_feat=8, num_block=1)
    nn.init.zeros_(net.conv_last.weight)
    nn.init.zeros_(net.conv_last.bias)
    x = torch.rand(1, 3, 6, 6)
    ref = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(net(x), ref)


def test_bad_scale():
    with pytest.raises(ValueError, match="scale"):
        MSRResNet(scale=5)
