"""EfficientPS's dense parts and the EfficientNet-B5 backbone: structure at the paper's sizes, the 2-way FPN's two
paths, the semantic head's modules, the region-proposal maps in 2D and 3D.

The shared tester (tests/test_zoo_models.py) runs both like every entry; here: what is particular to them.
"""

from __future__ import annotations

import pytest
import torch

from segarch import zoo
from segarch.backbones.efficientnet import MBConv
from segarch.blocks.squeeze_excitation import SqueezeExcitation
from segarch.nets.efficientps import DPC_DILATIONS, TwoWayFPN

pytestmark = pytest.mark.slow  # builds and runs networks of the zoo


def _paper(name: str):
    with torch.device("meta"):
        return zoo.create(name, **zoo.card(name).paper_config)


def test_efficientnet_b5_has_the_scaled_widths_and_repeats_and_efficientps_drops_its_gates():
    b5 = _paper("efficientnet_b5")
    assert [len(s) for s in b5.encoder.stages] == [3, 5, 5, 7, 7, 9, 3]  # ceil(n * 2.2)
    assert b5.encoder.out_channels == (40, 64, 176, 2048)
    assert any(isinstance(m, SqueezeExcitation) for m in b5.modules())
    net = _paper("efficientps")
    assert net.encoder.out_channels == (40, 64, 176, 2048)
    assert not any(isinstance(m, SqueezeExcitation) for m in net.modules())
    kernels = {m.block[1].conv.kernel_size for m in net.encoder.modules() if isinstance(m, MBConv)
               and len(m.block) == 3}
    assert kernels == {(3, 3), (5, 5)}
    acts = {type(m).__name__ for m in net.encoder.modules() if isinstance(m, (torch.nn.LeakyReLU, torch.nn.SiLU))}
    assert acts == {"LeakyReLU"}


def test_paper_configuration_widths():
    net = _paper("efficientps")
    assert [c.conv.out_channels for c in net.fpn.top_down_laterals] == [256] * 4
    assert [c.conv.out_channels for c in net.fpn.bottom_up_laterals] == [256] * 4
    assert all(c.depthwise.conv.groups == 256 for c in net.fpn.outputs)  # separable 3x3 outputs
    head = net.semantic_head
    dilations = [c.depthwise.conv.dilation for c in head.dpc[0].convs]
    assert dilations == list(DPC_DILATIONS)
    assert head.dpc[0].project.conv.in_channels == 5 * 256 and head.dpc[0].project.conv.out_channels == 128
    assert [s.pointwise.conv.out_channels for s in head.lsfe[0]] == [128, 128]
    assert head.classifier.in_channels == 4 * 128 and head.classifier.out_channels == 19
    assert net.rpn.conv.conv.out_channels == 256
    assert net.rpn.objectness.out_channels == 3 and net.rpn.boxes.out_channels == 12


def test_two_way_fpn_carries_information_both_ways():
    """The finest input reaches the coarsest output (bottom-up path) and the coarsest the finest (top-down)."""
    torch.manual_seed(0)
    fpn = TwoWayFPN(2, (2, 3, 4, 5), 4).eval()
    features = [torch.randn(1, c, 32 // 2 ** i, 32 // 2 ** i, requires_grad=True) for i, c in enumerate((2, 3, 4, 5))]
    out = fpn(features)
    assert [tuple(o.shape) for o in out] == [(1, 4, 32 >> i, 32 >> i) for i in range(4)]
    out[-1].sum().backward(retain_graph=True)
    assert features[0].grad.abs().sum() > 0
    for f in features:
        f.grad = None
    out[0].sum().backward()
    assert features[-1].grad.abs().sum() > 0


@pytest.mark.parametrize("dims,shape", [(2, (64, 96)), (3, (32, 64, 32))])
def test_heads_in_2d_and_3d(dims, shape):
    torch.manual_seed(0)
    config = zoo.card("efficientps").test_config
    net = zoo.create("efficientps", spatial_dims=dims, in_channels=1, out_channels=3, **config).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 1, *shape))
    assert {k: tuple(v.shape) for k, v in y.items()} == net.output_shapes((1, 1, *shape))
    assert y["boxes_4"].shape[1] == 3 * 2 * dims and y["objectness_32"].shape[2:] == tuple(s // 32 for s in shape)
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.randn(1, 1, *[s + 16 for s in shape]))
    with pytest.raises(ValueError, match="`anchors` must be a positive integer"):
        zoo.create("efficientps", anchors=0)
