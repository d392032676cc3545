"""The real-time networks and light backbones against their papers' structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segarch import zoo

pytestmark = pytest.mark.slow  # builds, runs and trains networks of the zoo


def _convs(net: nn.Module, dims: int = 2):
    kinds = (nn.Conv2d, nn.ConvTranspose2d) if dims == 2 else (nn.Conv3d, nn.ConvTranspose3d)
    return [m for m in net.modules() if isinstance(m, kinds)]


def test_mobilenet_v2_follows_table_2_and_keeps_linear_bottlenecks():
    from segarch.backbones.mobilenet import InvertedResidual, MobileNetV2Encoder

    enc = MobileNetV2Encoder(2, 3)
    assert enc.out_channels == (16, 24, 32, 96, 320) and enc.reductions == (2, 4, 8, 16, 32)
    blocks = [m for m in enc.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 1 + 2 + 3 + 4 + 3 + 3 + 1 == 17
    # The projection is linear (no activation after the last 1x1) and the expansion is 6x.
    last = blocks[5].block
    assert not hasattr(last[-1], "act")
    assert last[0].conv.out_channels == 6 * last[0].conv.in_channels
    dilated = MobileNetV2Encoder(2, 3, output_stride=8)
    feats = dilated(torch.zeros(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 8, 8]


def test_enet_initial_block_concatenates_13_filters_with_pooled_input():
    net = zoo.create("enet", spatial_dims=2, in_channels=3, out_channels=19)
    assert net.initial.conv.out_channels == 13 and net.initial.conv.stride == (2, 2)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        cat = torch.cat([net.initial.conv(x), net.initial.pool(x)], dim=1)
    assert torch.equal(cat[:, 13:], nn.functional.max_pool2d(x, 2))  # the last 3 channels are the pooled image
    # Stages 2 and 3 carry the paper's dilations 2, 4, 8, 16 and two asymmetric 5x1/1x5 bottlenecks each.
    dilations = [b.conv[0].conv.dilation[0] for b in net.stage2 if hasattr(b.conv[0], "conv")]
    assert dilations == [1, 2, 4, 1, 8, 16]
    asym = [b for b in net.stage3 if not hasattr(b.conv[0], "conv")]
    assert [tuple(c.kernel_size) for c in _convs(asym[0].conv)] == [(5, 1), (1, 5)]
    # The decoder unpools with the encoder's max-pooling indices.
    net = zoo.create("enet", spatial_dims=2, in_channels=1, out_channels=2, features=(8, 16, 32)).eval()
    assert net(torch.randn(1, 1, 24, 40)).shape == (1, 2, 24, 40)


def test_espnet_esp_module_dilations_and_hierarchical_fusion():
    from segarch.nets.espnet import ESPModule

    torch.manual_seed(0)
    esp = ESPModule(2, 64, 64).eval()
    assert [b.dilation[0] for b in esp.branches] == [1, 2, 4, 8, 16]
    assert [b.out_channels for b in esp.branches] == [16, 12, 12, 12, 12]  # n1 = N - 4 * (N // 5)
    x = torch.randn(1, 64, 40, 40)
    with torch.no_grad():
        r = esp.reduce(x)
        b = [br(r) for br in esp.branches]
        fused = torch.cat([b[0], b[1], b[1] + b[2], b[1] + b[2] + b[3], b[1] + b[2] + b[3] + b[4]], dim=1)
        assert torch.allclose(esp(x), esp.out(fused + x), atol=1e-5)
    net = zoo.create("espnet", spatial_dims=2, in_channels=3, out_channels=20)
    assert len(net.level2) == 2 and len(net.level3) == 8  # alpha2 = 2, alpha3 = 8
    assert net.down2.reduce.stride == (2, 2) and not net.down2.residual


def test_fast_scnn_learning_to_downsample_reaches_one_eighth_and_global_branch_one_32nd():
    net = zoo.create("fast_scnn", spatial_dims=2, in_channels=3, out_channels=19).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        high = net.learning_to_downsample(x)
        low = net.global_features(high)
    assert high.shape == (1, 64, 8, 12) and low.shape == (1, 128, 2, 3)
    dw = net.fusion.low[0].conv
    assert dw.groups == dw.in_channels == 128 and dw.dilation == (4, 4)  # DWConv dilated by the x4 up-sampling
    assert [len(s) for s in net.global_features[:3]] == [3, 3, 3]


def test_contextnet_deep_branch_sees_a_quarter_resolution_image():
    net = zoo.create("contextnet", spatial_dims=2, in_channels=3, out_channels=19, width=0.25).eval()
    seen = {}
    net.deep.register_forward_hook(lambda m, i, o: seen.update(inp=i[0].shape, out=o.shape))
    net.shallow.register_forward_hook(lambda m, i, o: seen.update(shallow=o.shape))
    net(torch.randn(1, 3, 64, 128))
    assert seen["inp"][2:] == (16, 32) and seen["out"][2:] == (2, 4) and seen["shallow"][2:] == (8, 16)


def test_cgnet_block_joins_local_and_dilated_surrounding_context_gated_globally():
    from segarch.nets.cgnet import ContextGuidedBlock

    net = zoo.create("cgnet", spatial_dims=2, in_channels=3, out_channels=19)
    assert len(net.stage2) + 1 == 3 and len(net.stage3) + 1 == 21  # M3N21
    block = net.stage3[0]
    assert block.f_loc.groups == block.f_loc.in_channels == 64 and block.f_sur.dilation == (4, 4)
    assert net.stage2[0].f_sur.dilation == (2, 2)
    # f_glo multiplies the joint feature: a closed gate leaves only the residual input.
    torch.manual_seed(0)
    cg = ContextGuidedBlock(2, 16, 16).eval()
    nn.init.zeros_(cg.f_glo.fc[2].weight)
    nn.init.constant_(cg.f_glo.fc[2].bias, -60.0)
    x = torch.randn(2, 16, 8, 8)
    assert torch.allclose(cg(x), x, atol=1e-6)


def test_lednet_ss_nbt_splits_factorises_and_shuffles():
    from segarch.blocks.shuffle import channel_shuffle
    from segarch.nets.lednet import LEDNET_DILATIONS, SSnbt

    assert channel_shuffle(torch.arange(6.0).reshape(1, 6, 1, 1), 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    unit = SSnbt(2, 8, dilation=5)
    left = [tuple(c.kernel_size) for c in _convs(unit.left)]
    right = [tuple(c.kernel_size) for c in _convs(unit.right)]
    assert left == [(3, 1), (1, 3)] * 2 and right == [(1, 3), (3, 1)] * 2
    assert [c.dilation for c in _convs(unit.left)][2:] == [(5, 1), (1, 5)]
    assert all(c.in_channels == 4 for c in _convs(unit))  # each branch sees half the channels
    net = zoo.create("lednet", spatial_dims=2, in_channels=3, out_channels=19)
    dil = [m.left[1].conv0.dilation[0] for m in net.encoder if isinstance(m, SSnbt)]
    assert dil == [1] * 5 + list(LEDNET_DILATIONS)


def test_bisenet_spatial_path_at_one_eighth_and_context_path_with_two_arms():
    from segarch.blocks.bisenet_fusion import AttentionRefinement

    net = zoo.create("bisenet", spatial_dims=2, in_channels=3, out_channels=19, width=0.25).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert net.spatial_path(x).shape[2:] == (8, 12)
        feats = net.backbone(x)
    assert [f.shape[-1] for f in feats] == [24, 12, 6, 3]  # Xception39 at 1/4, 1/8, 1/16, 1/32
    arms = [m for m in net.modules() if isinstance(m, AttentionRefinement)]
    assert len(arms) == 2
    assert (arms[0].conv.conv.in_channels, arms[1].conv.conv.in_channels) == (64, 32)  # on the 1/32 and 1/16 stages
    # The ARM's attention is a per-channel vector in (0, 1) from the global average.
    arm = arms[1]
    f = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        y = arm.conv(f)
        a = arm.attention(y.mean((2, 3), keepdim=True))
        assert a.shape == (2, 32, 1, 1) and a.min() > 0 and a.max() < 1
        assert torch.allclose(arm(f), y * a)
    res = zoo.create("bisenet", spatial_dims=2, in_channels=3, out_channels=19, backbone="resnet18", width=0.125)
    assert res.backbone.out_channels[-2:] == (32, 64)


def test_bisenetv2_detail_branch_at_one_eighth_semantic_branch_at_one_32nd():
    from segarch.nets.bisenetv2 import GatherExpansion

    net = zoo.create("bisenetv2", spatial_dims=2, in_channels=3, out_channels=19).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert net.detail(x).shape == (1, 128, 8, 8)
        assert net.semantic[0](x).shape == (1, 16, 16, 16)  # stem block: 1/4, 16 channels
        assert net.semantic(x).shape == (1, 128, 2, 2)
    ge = [m for m in net.semantic if isinstance(m, GatherExpansion)]
    assert len(ge) == 8 and ge[0].expand[0].conv.out_channels == 6 * 16  # expansion ratio 6
    assert ge[0].expand[0].conv.groups == 16  # depthwise expansion


def test_stdc_module_concatenates_progressively_halved_widths():
    from segarch.nets.stdc import STDCModule

    torch.manual_seed(0)
    module = STDCModule(2, 64, 256, stride=2).eval()
    assert module.widths == (128, 64, 32, 32)
    assert [b.conv.kernel_size for b in module.blocks] == [(1, 1), (3, 3), (3, 3), (3, 3)]
    assert [b.conv.stride for b in module.blocks] == [(1, 1), (2, 2), (1, 1), (1, 1)]
    x = torch.randn(1, 64, 16, 16)
    with torch.no_grad():
        y = module(x)
        b1 = module.blocks[0](x)
        b2 = module.blocks[1](b1)
    assert y.shape == (1, 256, 8, 8)
    assert torch.allclose(y[:, :128], nn.functional.avg_pool2d(b1, 3, 2, 1))  # the first block's output, pooled
    assert torch.allclose(y[:, 128:192], b2)
    net = zoo.create("stdc_seg", spatial_dims=2, in_channels=3, out_channels=19, backbone="stdc2")
    assert [len(s) for s in net.backbone.stages] == [4, 5, 3]
    assert net.backbone.out_channels[2:] == (256, 512, 1024)


def test_swiftnet_ladder_decoder_over_resnet18_with_pyramid_pooling():
    net = zoo.create("swiftnet", spatial_dims=2, in_channels=3, out_channels=19, base_width=16, channels=32).eval()
    sizes = []
    for up in net.up:
        up.skip.register_forward_hook(lambda m, i, o: sizes.append((i[0].shape[1], o.shape[-1])))
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 19, 64, 64)
    assert sizes == [(64, 4), (32, 8), (16, 16)]  # skips from 1/16, 1/8, 1/4 of ResNet-18 (base 16)
    assert [type(m).__name__ for m in net.up[0].blend] == ["BatchNorm2d", "ReLU", "Conv2d"]  # pre-activation
    assert [lvl[0].output_size for lvl in net.spp.levels] == [8, 4, 2]
    full = zoo.create("swiftnet", spatial_dims=2, in_channels=3, out_channels=19)
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in full.up.modules()) == 3


def test_liteseg_daspp_rates_long_and_short_residuals():
    net = zoo.create("liteseg", spatial_dims=2, in_channels=3, out_channels=19)
    daspp = net.daspp
    assert [b[0].depthwise.conv.dilation for b in daspp.atrous] == [(3, 3), (6, 6), (9, 9)]
    assert daspp.fuse.depthwise.conv.in_channels == 1280 + 5 * 96  # long residual: the encoder output is concatenated
    assert net.decoder[0].depthwise.conv.in_channels == 96 + 24  # short residual: MobileNetV2's 1/4 features (24)
    small = zoo.create("liteseg", spatial_dims=2, in_channels=1, out_channels=2, width_mult=0.25, channels=8).eval()
    seen = {}
    small.decoder.register_forward_hook(lambda m, i, o: seen.update(shape=i[0].shape))
    with torch.no_grad():
        small(torch.randn(1, 1, 64, 96))
    assert seen["shape"][2:] == (16, 24)  # the decoder runs at 1/4


def test_espnetv2_eesp_groups_receptive_field_limits_and_reinforcement():
    from segarch.nets.espnetv2 import EESP, StridedEESP

    assert EESP(2, 64, 64, r_lim=13).dilations == (1, 2, 3, 4)  # 3x3, 5x5, 7x7, 9x9 effective fields
    assert EESP(2, 64, 64, r_lim=7).dilations == (1, 1, 2, 3)  # fields above 7 fall back to 3x3
    unit = EESP(2, 64, 64)
    assert unit.reduce.conv.groups == 4 and unit.expand.conv.groups == 4 and unit.reduce.conv.out_channels == 16
    assert all(b.groups == 16 for b in unit.branches)  # depthwise dilated convolutions
    down = StridedEESP(2, 32, 128, image_channels=3).eval()
    with torch.no_grad():
        y = down(torch.randn(1, 32, 16, 16), torch.randn(1, 3, 32, 32))
    assert y.shape == (1, 128, 8, 8) and down.eesp.expand.conv.out_channels == 96  # 32 pooled + 96 strided
    net = zoo.create("espnetv2", spatial_dims=2, in_channels=3, out_channels=20)
    assert len(net.level3) == 3 and len(net.level4) == 7


def test_vovnet_osa_aggregates_once_at_the_end():
    from segarch.backbones.vovnet import OSAModule, VoVNetEncoder

    torch.manual_seed(0)
    osa = OSAModule(2, 8, 4, 16).eval()
    assert osa.aggregate.conv.in_channels == 8 + 5 * 4  # input + five layer outputs, concatenated once
    assert [layer.conv.in_channels for layer in osa.layers] == [8, 4, 4, 4, 4]  # each layer sees only the previous one
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        outs, y = [x], x
        for layer in osa.layers:
            y = layer(y)
            outs.append(y)
        assert torch.allclose(osa(x), osa.aggregate(torch.cat(outs, 1)))
    enc = VoVNetEncoder(2, 3, depth=57)
    assert [sum(isinstance(m, OSAModule) for m in s) for s in enc.stages] == [1, 1, 4, 3]
    assert enc.out_channels == (256, 512, 768, 1024)


def test_osnet_four_streams_of_growing_depth_share_one_gate():
    from segarch.backbones.osnet import LiteConv, OSBlock

    torch.manual_seed(0)
    block = OSBlock(2, 32, 64).eval()
    # receptive fields 3, 5, 7, 9
    assert [sum(isinstance(m, LiteConv) for m in s) for s in block.streams] == [1, 2, 3, 4]
    calls = []
    block.gate.register_forward_hook(lambda m, i, o: calls.append(1))
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        block(x)
        assert len(calls) == 4  # the unified aggregation gate: one module for all streams
        nn.init.zeros_(block.gate.fc[2].weight)
        nn.init.constant_(block.gate.fc[2].bias, -60.0)  # a closed gate silences every stream
        y = block(x)
        assert torch.allclose(y, torch.relu(block.expand(torch.zeros(2, 16, 8, 8)) + block.shortcut(x)), atol=1e-5)
    enc = zoo.create("osnet", spatial_dims=2, in_channels=3, out_channels=1000).encoder
    assert enc.out_channels == (256, 384, 512) and enc.reductions == (4, 8, 16)


def test_global_context_branches_train_at_batch_size_one():
    # Batch norm of a globally pooled vector has one value per channel at batch size 1: PooledBatchNorm handles it.
    torch.manual_seed(0)
    for name, cfg in (("bisenet", {"width": 0.125, "blocks": (1, 1, 1)}),
                      ("liteseg", zoo.card("liteseg").test_config), ("fast_scnn", zoo.card("fast_scnn").test_config)):
        net = zoo.create(name, spatial_dims=2, in_channels=1, out_channels=2, **cfg).train()
        y = net(torch.randn(1, 1, 64, 64))
        y.square().mean().backward()
        assert y.shape == (1, 2, 64, 64) and torch.isfinite(y).all()


def test_3d_nets_factorise_per_axis():
    enet = zoo.create("enet", spatial_dims=3, in_channels=1, out_channels=2, features=(8, 16, 32))
    asym = [b for b in enet.stage2 if not hasattr(b.conv[0], "conv")][0]
    assert [tuple(c.kernel_size) for c in _convs(asym.conv, 3)] == [(5, 1, 1), (1, 5, 1), (1, 1, 5)]
    led = zoo.create("lednet", spatial_dims=3, in_channels=1, out_channels=2, features=(8, 16, 32))
    unit = led.encoder[1]
    assert [tuple(c.kernel_size) for c in _convs(unit.right, 3)][:3] == [(1, 1, 3), (1, 3, 1), (3, 1, 1)]


@pytest.mark.parametrize(
    "name,options,match",
    [
        ("enet", {"in_channels": 16}, "in_channels"),
        ("bisenet", {"backbone": "resnet50"}, "backbone"),
        ("bisenetv2", {"detail": (8, 8, 16), "semantic": (4, 8, 8, 32)}, "semantic"),
        ("stdc_seg", {"backbone": "stdc3"}, "backbone"),
        ("contextnet", {"input_scale": 3}, "input_scale"),
        ("espnet", {"alpha3": 0}, "alpha3"),
        ("espnetv2", {"scale": 3.0}, "scale"),
        ("cgnet", {"n": 1}, "`n`"),
        ("lednet", {"features": (8, 16)}, "features"),
        ("liteseg", {"channels": 0}, "channels"),
        ("swiftnet", {"channels": 2}, "channels"),
        ("vovnet39", {"width_scale": 0}, "width_scale"),
        ("osnet", {"width": -1}, "width"),
    ],
)
def test_bad_options_raise_value_errors_naming_them(name, options, match):
    options = dict(options)
    in_channels = options.pop("in_channels", 1)
    with pytest.raises(ValueError, match=match):
        zoo.create(name, spatial_dims=2, in_channels=in_channels, out_channels=2, **options)
