"""Each architecture's structure against its paper."""

from __future__ import annotations

import torch
from torch import nn

from segarch import zoo
from segarch.blocks import AttentionGate


def _convs(net: nn.Module, dims: int):
    kinds = (nn.Conv2d, nn.ConvTranspose2d) if dims == 2 else (nn.Conv3d, nn.ConvTranspose3d)
    return [m for m in net.modules() if isinstance(m, kinds)]


def test_unet_has_the_papers_23_convolutions_and_widths():
    net = zoo.create("unet")
    convs = _convs(net, 2)
    assert len(convs) == 23  # "In total the network has 23 convolutional layers."
    encoder_widths = [blk.conv2.conv.out_channels for blk in net.encoder]
    assert encoder_widths == [64, 128, 256, 512, 1024]
    ups = [m for m in convs if isinstance(m, nn.ConvTranspose2d)]
    assert [u.kernel_size for u in ups] == [(2, 2)] * 4  # 2x2 up-convolutions halving the channels
    assert [(u.in_channels, u.out_channels) for u in ups] == [(1024, 512), (512, 256), (256, 128), (128, 64)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the paper has no normalisation
    assert convs[-1].kernel_size == (1, 1) and convs[-1].out_channels == 2


def test_unet_3d_uses_3d_layers_throughout():
    net = zoo.create("unet", spatial_dims=3, features=(4, 8, 16))
    assert len(_convs(net, 3)) == 2 * 3 + 2 * 2 + 2 + 1
    assert not _convs(net, 2)


def test_attention_unet_gates_three_skips_and_maps_are_probabilities():
    torch.manual_seed(0)
    net = zoo.create("attention_unet", spatial_dims=2, features=(4, 8, 16, 32, 64)).eval()
    assert sum(isinstance(m, AttentionGate) for m in net.modules()) == 3
    x = torch.randn(1, 1, 64, 48)
    net(x)
    maps = net.attention_maps
    assert [tuple(m.shape[2:]) for m in maps] == [(32, 24), (16, 12), (8, 6)]
    for m in maps:
        assert m.min() >= 0 and m.max() <= 1
    # The gate multiplies the skip features: zero attention must silence them.
    gate = net.gates[0]
    nn.init.zeros_(gate.psi.weight)
    nn.init.constant_(gate.psi.bias, -50.0)
    skip = torch.randn(1, 8, 16, 16)
    gated, alpha = gate(skip, torch.randn(1, 16, 8, 8))
    assert alpha.max() < 1e-6
    assert torch.allclose(gated, gate.out(torch.zeros_like(skip)), atol=1e-5)


def test_unet_plus_plus_nested_nodes_and_pruning():
    torch.manual_seed(0)
    net = zoo.create("unet_plus_plus", features=(4, 8, 16, 32, 64)).eval()
    assert [len(level) for level in net.nodes] == [5, 4, 3, 2, 1]  # 15 nodes X[i][j], i + j <= 4
    # X[0][4] concatenates X[0][0..3] and an up-sampled X[1][3]: 5 × 4 channels in.
    assert net.nodes[0][4].conv1.conv.in_channels == 5 * 4
    assert len(net.heads) == 4  # deep supervision on X[0][1..4]
    x = torch.randn(2, 1, 32, 32)
    full = net(x)
    pruned = zoo.create("unet_plus_plus", features=(4, 8, 16, 32, 64), prune_depth=1).eval()
    pruned.load_state_dict(net.state_dict())
    # UNet++ L1 uses only X[0][0], X[1][0] and X[0][1]: its output is the first head on X[0][1].
    x00 = net.nodes[0][0](x)
    x10 = net.nodes[1][0](net.pool(x00))
    x01 = net.nodes[0][1](torch.cat([x00, net.ups[0][0](x10)], 1))
    assert torch.allclose(pruned(x), net.heads[0](x01), atol=1e-5)
    assert not torch.allclose(pruned(x), full)


def test_resnet_encoder_stages_strides_and_dilation():
    from segarch.backbones import ResNetEncoder
    from segarch.backbones.resnet import Bottleneck

    enc = ResNetEncoder(2, 3, depth=101, base_width=8)
    assert [len(layer) for layer in enc.layers] == [3, 4, 23, 3]
    assert all(isinstance(b, Bottleneck) for layer in enc.layers for b in layer)
    assert enc.out_channels == (8, 32, 64, 128, 256) and enc.reductions == (2, 4, 8, 16, 32)
    x = torch.randn(1, 3, 64, 96)
    assert [tuple(f.shape[2:]) for f in enc(x)] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    dilated = ResNetEncoder(3, 1, depth=18, output_stride=8, base_width=4)
    assert dilated.reductions == (2, 4, 8, 8, 8)
    assert dilated.layers[3][0].conv1.conv.dilation == (4, 4, 4)
    feats = dilated(torch.randn(1, 1, 16, 32, 32))
    assert tuple(feats[-1].shape[2:]) == (2, 4, 4)


def test_vgg16_has_13_convolutions_in_five_blocks():
    from segarch.backbones import VGGEncoder

    enc = VGGEncoder(2, 3)
    assert [len(b) for b in enc.blocks] == [2, 2, 3, 3, 3]
    assert enc.out_channels == (64, 128, 256, 512, 512)
    assert len(_convs(enc, 2)) == 13
