"""Structure checks of the context and attention networks against their papers.

The shared tester (``test_zoo_models.py``) runs shapes, gradients, parameter counts and training for
every registered net; these tests check what makes each architecture itself (rates, bins, attention
footprints), with values.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segarch import zoo
from segarch.blocks.aspp import ASPP, DenseASPP, ImagePooling
from segarch.blocks.pyramid_pooling import PyramidPooling


def _paper_net(name: str):
    """The paper configuration, built on the meta device (no memory)."""
    with torch.device("meta"):
        return zoo.create(name, **zoo.card(name).paper_config)


def _dilations(module: nn.Module) -> list[int]:
    return [m.dilation[0] for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)) and m.kernel_size[0] == 3]


# --- ASPP and the DeepLabs ---------------------------------------------------------------------------


def test_deeplab_v2_aspp_is_four_summed_classifiers_at_rates_6_12_18_24():
    net = _paper_net("deeplab_v2")
    aspp = net.aspp
    assert aspp.fusion == "sum" and aspp.rates == (6, 12, 18, 24)
    assert [b.dilation[0] for b in aspp.branches] == [6, 12, 18, 24]
    assert all(b.in_channels == 2048 and b.out_channels == 21 for b in aspp.branches)
    # The output is the sum of the branches' class scores.
    torch.manual_seed(0)
    small = ASPP(2, 4, 3, rates=(1, 2), fusion="sum")
    x = torch.randn(1, 4, 9, 9)
    assert torch.allclose(small(x), small.branches[0](x) + small.branches[1](x), atol=1e-6)


@pytest.mark.parametrize("name", ["deeplab_v3", "deeplab_v3_plus"])
def test_deeplab_v3_aspp_has_1x1_three_atrous_and_image_pooling(name):
    net = _paper_net(name)
    aspp = net.aspp
    assert aspp.rates == (6, 12, 18) and aspp.image_pooling
    assert len(aspp.branches) == 5 and isinstance(aspp.branches[-1], ImagePooling)
    assert aspp.branches[0].conv.kernel_size == (1, 1)
    assert [b.conv.dilation[0] for b in aspp.branches[1:4]] == [6, 12, 18]
    assert aspp.project.conv.in_channels == 5 * 256 and aspp.project.conv.out_channels == 256
    assert net.encoder.reductions[-1] == 16
    # The rates double at output stride 8, as the paper does.
    with torch.device("meta"):
        assert zoo.create(name, in_channels=3, out_channels=21, output_stride=8).aspp.rates == (12, 24, 36)


def test_image_pooling_branch_is_constant_over_space():
    torch.manual_seed(0)
    branch = ImagePooling(3, 4, 2).eval()
    out = branch(torch.randn(2, 4, 3, 5, 6))
    assert out.shape == (2, 2, 3, 5, 6)
    assert torch.allclose(out, out[..., :1, :1, :1].expand_as(out))


def test_deeplab_v3_plus_decoder_reads_stride_4_features_reduced_to_48():
    net = _paper_net("deeplab_v3_plus")
    assert net.encoder.reductions[1] == 4
    assert net.reduce.conv.in_channels == net.encoder.out_channels[1] == 256
    assert net.reduce.conv.out_channels == 48
    assert net.decoder[0].conv.in_channels == 256 + 48
    assert len(net.decoder) == 2 and all(c.conv.kernel_size == (3, 3) for c in net.decoder)


# --- PSPNet --------------------------------------------------------------------------------------------


def test_pspnet_pyramid_bins_are_1_2_3_6_with_quarter_channels():
    net = _paper_net("pspnet")
    ppm = net.ppm
    assert ppm.bins == (1, 2, 3, 6)
    assert [level[0].output_size for level in ppm.levels] == [1, 2, 3, 6]
    assert all(level[1].conv.out_channels == 512 for level in ppm.levels)
    assert ppm.out_channels == 2048 + 4 * 512 and net.encoder.reductions[-1] == 8


def test_pyramid_level_is_piecewise_constant_before_upsampling():
    # Each level sees bin averages: a level of b bins pools a 6x6 map into b x b means.
    torch.manual_seed(0)
    ppm = PyramidPooling(2, 4, bins=(1, 2, 3, 6)).eval()
    x = torch.randn(1, 4, 6, 6)
    for b, level in zip(ppm.bins, ppm.levels):
        pooled = level[0](x)
        assert pooled.shape[2:] == (b, b)
        k = 6 // b
        expected = x.unfold(2, k, k).unfold(3, k, k).mean((-1, -2))
        assert torch.allclose(pooled, expected, atol=1e-6)


def test_pspnet_auxiliary_head_is_training_only():
    torch.manual_seed(0)
    net = zoo.create("pspnet", spatial_dims=2, in_channels=1, out_channels=3, aux_head=True,
                     **zoo.card("pspnet").test_config)
    x = torch.randn(2, 1, 32, 32)
    net(x)
    assert net.aux_logits.shape == (2, 3, 32, 32)
    net.eval()
    net(x)
    assert net.aux_logits is None
